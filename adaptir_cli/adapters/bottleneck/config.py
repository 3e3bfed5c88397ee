"""Hyper-parameters of a bottleneck adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

from adaptir_cli.adapters.fields import MIN_HIDDEN, check_config_fields, default_hidden


@dataclass(frozen=True)
class BottleneckConfig:
    hidden: int | None = field(
        default=None,
        metadata={
            "help": "bottleneck width; default max(8, d // 24), AdaptIR's. Parameters per MLP: 2 d h + d + h"
        },
    )

    def __post_init__(self) -> None:
        check_config_fields(self)

    def hidden_width(self, dim: int) -> int:
        return self.hidden if self.hidden is not None else default_hidden(dim, MIN_HIDDEN)
