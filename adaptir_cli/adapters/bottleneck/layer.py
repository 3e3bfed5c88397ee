"""The bottleneck: 1x1 down-projection, non-linearity, zero-initialised 1x1 up-projection.

Adapter runs it on the MLP's output and adds the result (out + f(out)); AdaptFormer runs it on
the MLP's input, scaled, beside the MLP (out + s f(n)). Injection decides which (the method's
placement); the module only maps a feature map (N, d, H, W) to a correction of the same shape.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import init

from adaptir_cli.adapters.bottleneck.config import BottleneckConfig


class Bottleneck(nn.Module):
    def __init__(self, dim: int, config: BottleneckConfig | None = None, activation: type[nn.Module] = nn.GELU,
                 scale: float = 1.0) -> None:
        super().__init__()
        hidden = (config or BottleneckConfig()).hidden_width(dim)
        self.down = nn.Conv2d(dim, hidden, 1)
        self.act = activation()
        self.up = nn.Conv2d(hidden, dim, 1)
        self.scale = scale
        # Zero up-projection: the correction is exactly 0 at initialisation.
        init.zeros_(self.up.weight)
        init.zeros_(self.up.bias)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.up(self.act(self.down(x)))
        return out if self.scale == 1.0 else out * self.scale
