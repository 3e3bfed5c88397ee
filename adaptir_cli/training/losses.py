"""What a training step minimises: L1 in the [0, 1] pixel scale, plus optionally a phase loss.

The phase loss is aimed at one artifact. Bases whose body runs at a lower resolution than the
output (CompactIR's x1 heads: a half-resolution body, pixel-shuffled back) make each pixel of a
2 x 2 cell from its own output channel, so any error the channels do not share shows as a 2-pixel
checkerboard or stripes; on a flat area it is the same in every cell. Per pixel it is too small
for L1 to notice under training noise (1-2 levels of 255 against errors of tens under low light),
but it is coherent, so averaging the cells' alternating components over a neighbourhood brings it
out of the image content, which averages away. Measured on the low-light adapter (300 steps,
docs/training.md): weight 2 cut the pattern on flat grey from 2.5 to 0.2 levels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# 2 x 2 cells averaged into one phase measurement: 8 x 8 output pixels.
PHASE_POOL = 4


def phase_components(image: torch.Tensor) -> torch.Tensor:
    """The three alternating components of every 2 x 2 cell of (N, C, H, W): vertical stripes,
    horizontal stripes and checkerboard, (N, 3C, H // 2, W // 2); zero on any flat image."""
    height, width = image.shape[-2] // 2 * 2, image.shape[-1] // 2 * 2
    cells = image[..., :height, :width]
    a, b = cells[..., 0::2, 0::2], cells[..., 0::2, 1::2]
    c, d = cells[..., 1::2, 0::2], cells[..., 1::2, 1::2]
    return torch.cat([a - b + c - d, a + b - c - d, a - b - c + d], dim=1) / 4


def phase_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the neighbourhood-averaged 2 x 2 alternating components."""
    difference = phase_components(output) - phase_components(target)
    pool = min(PHASE_POOL, *difference.shape[-2:])
    return F.avg_pool2d(difference, pool).abs().mean()


def training_loss(output: torch.Tensor, target: torch.Tensor, phase_weight: float = 0.0) -> torch.Tensor:
    """L1, plus `phase_weight` times the phase loss when it is not 0."""
    loss = F.l1_loss(output, target)
    return loss + phase_weight * phase_loss(output, target) if phase_weight else loss
