"""Layers that more than one architecture (or an adapter) builds on."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# LMLT's published weights were trained with this epsilon; CompactIR and adapters use it too.
LAYER_NORM_EPS = 1e-6


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW map, at every pixel: the same in training and inference,
    and independent of the other images of a batch and of the other pixels of a tile."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, LAYER_NORM_EPS)
        return x.permute(0, 3, 1, 2)
