"""AdaptFormer's branch: the shared bottleneck with ReLU, its output scaled by s."""

from __future__ import annotations

from torch import nn

from adaptir_cli.adapters.adaptformer.config import AdaptFormerConfig
from adaptir_cli.adapters.bottleneck import Bottleneck


def adaptformer(dim: int, config: AdaptFormerConfig | None = None) -> Bottleneck:
    config = config or AdaptFormerConfig()
    return Bottleneck(dim, config, activation=nn.ReLU, scale=config.scale)
