"""A frozen base ready to run: architecture module, descriptor and the identity of its weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adaptir_cli.bases.descriptor import BaseDescriptor


@dataclass
class LoadedBase:
    name: str
    module: nn.Module
    descriptor: BaseDescriptor
    # sha256 of the weights file: adapter files name their base by it.
    sha256: str
    source: str

    def freeze(self) -> "LoadedBase":
        # Eval mode matters beyond dropout: EMT's BatchNorm must keep its running statistics.
        self.module.eval()
        self.module.requires_grad_(False)
        return self

    def __call__(self, x: torch.Tensor, head: str) -> torch.Tensor:
        """Run head `head` on (N, 3, H, W) in [0, 1]; returns (N, 3, sH, sW) in [0, 1], unclamped."""
        scale = self.descriptor.pixel_range
        return self.module(x * scale, self.descriptor.head(head).index) / scale
