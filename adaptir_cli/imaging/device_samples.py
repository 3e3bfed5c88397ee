"""An output's integer samples computed on the device that restored the image.

The host then receives 1 byte per sample (2 for 16-bit outputs) instead of 4 and does no
arithmetic on the pixels. The steps are those of `OutputPlan.samples` (luma, clip, scale,
round half to even) in float32, so the samples are the same bits as the host would compute.
"""

from __future__ import annotations

import numpy as np
import torch

from adaptir_cli.imaging.writing import OutputPlan, luma

# torch < 2.3 has no uint16: 16-bit samples then travel as int32 and become uint16 when the host
# stores them into the output's array.
_DEVICE_DTYPES = {8: torch.uint8, 16: getattr(torch, "uint16", torch.int32)}


def device_samples(block: torch.Tensor, plan: OutputPlan) -> torch.Tensor:
    """(1, 3, h, w) float RGB (any range) -> contiguous (h, w, plan.colour_channels) integer
    samples on the same device; alpha, a host-side plane, is added by the caller."""
    rgb = block[0].permute(1, 2, 0)
    values = luma(rgb)[..., None] if plan.grayscale else rgb
    peak = float(np.iinfo(plan.dtype).max)
    return values.clamp(0.0, 1.0).mul_(peak).round_().to(_DEVICE_DTYPES[plan.depth]).contiguous()
