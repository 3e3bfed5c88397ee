"""Fused attention over a batch of many small windows, within the limits of CUDA's launch grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# CUDA's fused attention kernels (memory-efficient, flash) give every batch entry a slot on one side
# of their launch grid, which holds at most 65535: a larger batch fails with "invalid configuration
# argument" (pytorch/pytorch#146704). Window attention over a batch of large tiles has more windows.
MAX_WINDOWS_PER_CALL = 65535


def window_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, scale: float | None = None
) -> torch.Tensor:
    """F.scaled_dot_product_attention on (windows, heads, L, d), at most MAX_WINDOWS_PER_CALL
    windows per call. A mask with one entry per window is cut with them; one of a single entry
    (broadcast over the windows) is shared."""
    windows = q.shape[0]
    if windows <= MAX_WINDOWS_PER_CALL:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    parts = []
    for start in range(0, windows, MAX_WINDOWS_PER_CALL):
        rows = slice(start, start + MAX_WINDOWS_PER_CALL)
        part_mask = mask if mask is None or mask.shape[0] == 1 else mask[rows]
        parts.append(F.scaled_dot_product_attention(q[rows], k[rows], v[rows], attn_mask=part_mask, scale=scale))
    return torch.cat(parts)
