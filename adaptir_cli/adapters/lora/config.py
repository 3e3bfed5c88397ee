"""Hyper-parameters of LoRA."""

from __future__ import annotations

from dataclasses import dataclass, field

from adaptir_cli.adapters.fields import check_config_fields


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = field(
        default=4,
        metadata={"help": "rank r of each update; parameters per layer: r (fan_in + fan_out), fan_in = in x k x k"},
    )
    alpha: float = field(default=4.0, metadata={"help": "the update is scaled by alpha / rank"})

    def __post_init__(self) -> None:
        check_config_fields(self)
