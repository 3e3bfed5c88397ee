"""Hyper-parameters of an AdaptFormer branch."""

from __future__ import annotations

from dataclasses import dataclass, field

from adaptir_cli.adapters.bottleneck import BottleneckConfig


@dataclass(frozen=True)
class AdaptFormerConfig(BottleneckConfig):
    """The bottleneck's width (checked by BottleneckConfig), and the fixed output scale."""

    scale: float = field(
        default=0.1, metadata={"help": "fixed factor s on the branch's output (AdaptFormer's default 0.1)"}
    )
