"""SSF for one frozen linear or convolution layer: y * gamma + beta per output channel."""

from __future__ import annotations

import torch
from torch import nn

from adaptir_cli.adapters.ssf.config import SSFConfig


class SSF(nn.Module):
    """Scale (init 1) and shift (init 0) of `layer`'s output channels; the identity at initialisation."""

    def __init__(self, layer: nn.Module, config: SSFConfig | None = None) -> None:
        super().__init__()
        channels = layer.weight.shape[0]
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        # Linear layers put channels last, convolutions at dimension 1.
        self.channels_last = isinstance(layer, nn.Linear)

    def forward(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        y = layer(x)
        if self.channels_last:
            return y * self.scale + self.shift
        return y * self.scale[:, None, None] + self.shift[:, None, None]
