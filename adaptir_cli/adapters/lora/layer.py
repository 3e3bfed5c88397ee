"""LoRA for one frozen linear or convolution layer: W + (alpha / r) B A, B zero at initialisation.

The update is merged into the weight and the base layer runs once with it (through
`torch.func.functional_call`), instead of adding a separate low-rank branch. That is exact for any
layer whose output is linear in its weight, including subclasses that transform their input
first (EMT's shifted 1x1 convolutions), and costs one weight-sized addition per call.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import init

from adaptir_cli.adapters.lora.config import LoRAConfig


class LoRA(nn.Module):
    """The low-rank update of `layer`'s weight; `layer` itself is passed to forward, never stored."""

    def __init__(self, layer: nn.Module, config: LoRAConfig | None = None) -> None:
        super().__init__()
        config = config or LoRAConfig()
        shape = layer.weight.shape  # (out, in) or (out, in / groups, k, k)
        fan_in = math.prod(shape[1:])
        self.down = nn.Parameter(torch.empty(config.rank, fan_in))  # A
        self.up = nn.Parameter(torch.zeros(shape[0], config.rank))  # B
        init.kaiming_uniform_(self.down, a=math.sqrt(5))
        self.scaling = config.alpha / config.rank

    def extra_repr(self) -> str:
        return f"rank={self.down.shape[0]}, scaling={self.scaling:g}"

    def forward(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        weight = layer.weight
        update = (self.up @ self.down).reshape(weight.shape) * self.scaling
        return functional_call(layer, {"weight": weight + update.to(weight.dtype)}, (x,))
