"""LMLT (Low-to-high Multi-Level Transformer), the lightweight SR network of jwgdmkj/LMLT.

Written from the project's specification (../shared/weights/LMLT.md); module and attribute names
follow the published checkpoints' keys so that they load strictly without renaming.

Shape of the computation: a 3x3 conv lifts RGB to `dim` channels; each block splits its
normalised features into `levels` channel groups, max-pools group i by 2**i, runs single-head
8x8 window attention on every level from coarse to fine (each coarse result is added to the next
finer input) and multiplies the aggregated result back onto its input; a conv FFN ("CCM")
follows. A 3x3 conv and a pixel shuffle make the output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adaptir_cli.bases.layers import ChannelLayerNorm

# The spec fixes the window; it cannot be read from tensor shapes (no relative-position tables).
WINDOW_SIZE = 8


def padding_multiple(levels: int, window_size: int = WINDOW_SIZE) -> int:
    """Side multiple that makes every level's map a whole number of windows (64 for LMLT-tiny)."""
    return window_size * 2 ** (levels - 1)


def min_input_size(levels: int, window_size: int = WINDOW_SIZE) -> int:
    """Smallest side the reflect padding accepts: torch needs pad < size, and pad < multiple."""
    return padding_multiple(levels, window_size) // 2 + 1


class WindowAttention(nn.Module):
    """Single-head attention inside non-overlapping windows, plus a per-window LePE on v."""

    def __init__(self, channels: int, window_size: int = WINDOW_SIZE) -> None:
        super().__init__()
        self.window_size = window_size
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        # Locally-enhanced positional encoding: depthwise 3x3 conv over v.
        self.get_v = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        ws = self.window_size
        rows, cols = h // ws, w // ws
        # (N, C, H, W) -> (N * windows, ws*ws, C), pixels row-major inside each window.
        tokens = (
            x.reshape(n, c, rows, ws, cols, ws)
            .permute(0, 2, 4, 3, 5, 1)
            .reshape(n * rows * cols, ws * ws, c)
        )
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        # The LePE conv sees each window alone: its zero padding sits at the window border.
        v_map = v.transpose(1, 2).reshape(-1, c, ws, ws)
        lepe = self.get_v(v_map).reshape(-1, c, ws * ws).transpose(1, 2)
        # Written out rather than F.scaled_dot_product_attention: on CPU that takes a slower
        # masked fallback path for these 9-channel heads.
        attn = torch.softmax((q * c**-0.5) @ k.transpose(1, 2), dim=-1)
        out = attn @ v + lepe
        out = self.proj(out)
        return (
            out.reshape(n, rows, cols, ws, ws, c)
            .permute(0, 5, 1, 3, 2, 4)
            .reshape(n, c, h, w)
        )


class LHSB(nn.Module):
    """Low-to-high self-attention block: window attention on a pyramid of max-pooled levels."""

    def __init__(self, dim: int, levels: int, window_size: int = WINDOW_SIZE) -> None:
        super().__init__()
        if dim % levels:
            raise ValueError(f"dim {dim} must split evenly into {levels} levels")
        self.levels = levels
        self.mfr = nn.ModuleList(WindowAttention(dim // levels, window_size) for _ in range(levels))
        self.aggr = nn.Conv2d(dim, dim, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        size = z.shape[-2:]
        groups = z.chunk(self.levels, dim=1)
        inputs = [groups[0]] + [F.max_pool2d(g, 2**i) for i, g in enumerate(groups) if i > 0]
        outs = []
        for i in reversed(range(self.levels)):
            attended = self.mfr[i](inputs[i])
            if i > 0:
                # Coarse-to-fine: the coarse result enters the next finer level's *input*.
                inputs[i - 1] = inputs[i - 1] + F.interpolate(attended, scale_factor=2, mode="nearest")
            outs.append(F.interpolate(attended, size=size, mode="nearest"))
        # Coarsest level first: the trained `aggr` weights expect this channel order.
        return F.gelu(self.aggr(torch.cat(outs, dim=1))) * z


class CCM(nn.Module):
    """The transformer FFN: 3x3 conv expand, GELU, 1x1 conv back. AdaptIR sits beside it."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.ccm = nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ccm(x)


class Block(nn.Module):
    def __init__(self, dim: int, levels: int, ffn_dim: int, window_size: int = WINDOW_SIZE) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.norm2 = ChannelLayerNorm(dim)
        self.lhsb = LHSB(dim, levels, window_size)
        self.ccm = CCM(dim, ffn_dim)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        f = f + self.lhsb(self.norm1(f))
        # norm2 is applied here, outside `ccm`, so a wrapper around `ccm` receives LN2(f).
        return f + self.ccm(self.norm2(f))


class LMLT(nn.Module):
    """LMLT super-resolution network; input RGB in 0..1, output unclamped at `scale` times the size."""

    def __init__(
        self,
        scale: int,
        dim: int = 36,
        blocks: int = 8,
        levels: int = 4,
        ffn_dim: int = 72,
        window_size: int = WINDOW_SIZE,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.multiple = padding_multiple(levels, window_size)
        self.min_size = min_input_size(levels, window_size)
        self.to_feat = nn.Conv2d(3, dim, 3, padding=1)
        self.feats = nn.Sequential(*(Block(dim, levels, ffn_dim, window_size) for _ in range(blocks)))
        self.to_img = nn.Sequential(nn.Conv2d(dim, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor, head: int = 0) -> torch.Tensor:
        if head != 0:
            raise ValueError(f"LMLT has a single head (index 0, x{self.scale} SR); got head {head}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LMLT expects an (N, 3, H, W) RGB batch; got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            raise ValueError(
                f"LMLT needs inputs of at least {self.min_size} x {self.min_size} pixels; got {h} x {w}. "
                "Pad or upscale the image first, or use a larger tile size."
            )
        # Reflect-pad to whole windows at every level; the blocks see the padded map, as trained.
        x = F.pad(x, (0, -w % self.multiple, 0, -h % self.multiple), mode="reflect")
        f0 = self.to_feat(x)
        f = self.feats(f0)
        # Crop before the tail so that its zero padding falls at the real image border.
        return self.to_img((f + f0)[:, :, :h, :w])
