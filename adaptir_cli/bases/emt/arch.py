"""EMT (Efficient Mixed Transformer, Zheng et al. 2023, arXiv:2305.11403) as a plain nn.Module.

Written from ../shared/weights/EMT.md, not from the authors' code. Module and buffer names follow
the published checkpoints (`body.{g}.sa_list.{j}...`, `body.{g}.mlp_list.{j}.fc1.mask`, ...) so
those files load with strict key matching. The numerics keep the authors' quirks on purpose (they
are listed in EMT.md section 9); each one is marked where it happens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adaptir_cli.bases.attention import window_attention

# DF2K RGB mean; the checkpoints store it (times 255) as the mean-shift biases, so this only
# matters for randomly built models.
DF2K_MEAN = (0.4690, 0.4490, 0.4036)

# The five one-hot taps of a 3x3 cross-correlation, in the order both shift schemes use:
# right neighbour, left neighbour, lower neighbour, upper neighbour, the pixel itself.
SHIFT_TAPS = ((1, 2), (1, 0), (2, 1), (0, 1), (1, 1))

# (rows, columns) of the two stripe orientations of every SWSA layer; each attends over one half
# of the qkv channels (tall stripes on the first half, wide ones on the second).
WINDOWS = ((32, 8), (8, 32))
# Reflect padding needs pad < size; padding up to a multiple of w is at most w - 1 and reaches
# the size exactly when size <= w / 2, so every side must exceed half the longest window.
MIN_SIZE = max(max(window) for window in WINDOWS) // 2 + 1
# Inputs that are multiples of every window side need no padding inside SWSA.
SIZE_MULTIPLE = math.lcm(*(side for window in WINDOWS for side in window))
# Head sizes the fused attention kernels vectorise (CPU flash attention, CUDA memory-efficient
# attention). EMT's heads have 10 components; CUDA refuses that size in fp32 and falls back to
# a kernel that forms every score, and on a CPU 16 components run faster than 10.
_HEAD_MULTIPLE = 8


@dataclass(frozen=True)
class EMTConfig:
    """Hyper-parameters; the published LSR files use the defaults with scale 2, 3 or 4."""

    scale: int
    dim: int = 60
    groups: int = 6
    layers: int = 6
    # Layers 0..attention_layers-1 of each group are SWSA, the rest pixel mixers.
    attention_layers: int = 2
    mlp_ratio: int = 2
    # Not recorded in the weights (the qkv width is the same for any head count).
    heads: int = 3

    def __post_init__(self) -> None:
        if self.dim % (2 * self.heads):
            raise ValueError(f"EMT dim {self.dim} must be divisible by 2 * heads = {2 * self.heads}")
        if not 0 <= self.attention_layers <= self.layers:
            raise ValueError(f"attention_layers {self.attention_layers} must be within 0..{self.layers}")


def pixel_mixer_channels(channels: int) -> list[slice]:
    """Pixel-mixer channel sets, one per tap of SHIFT_TAPS: interleaved by `c mod 5` (EMT.md 4)."""
    return [slice(tap, channels, 5) for tap in range(5)]


def shift_conv_channels(channels: int) -> list[slice]:
    """MLP shift-conv channel sets: contiguous blocks of channels // 5, the rest unshifted (EMT.md 6)."""
    block = channels // 5
    return [slice(tap * block, (tap + 1) * block) for tap in range(4)] + [slice(4 * block, channels)]


def shift_mask(channels: int, channel_sets: list[slice]) -> torch.Tensor:
    """The checkpoints' depthwise (C, 1, 3, 3) one-hot mask for a per-channel shift."""
    mask = torch.zeros(channels, 1, 3, 3)
    for selected, (row, col) in zip(channel_sets, SHIFT_TAPS):
        mask[selected, 0, row, col] = 1.0
    return mask


def shift_pixels(x: torch.Tensor, channel_sets: list[slice], circular: bool) -> torch.Tensor:
    """out[c, i, j] = x[c, i + row - 1, j + col - 1] for the tap (row, col) of c's channel set.

    Equal to the one-hot depthwise 3x3 cross-correlation the masks describe (circular or zero
    padding), but made of copies: exact, and far cheaper than a convolution on a CPU.
    """
    out = torch.empty_like(x) if circular else torch.zeros_like(x)
    height, width = x.shape[-2:]
    for selected, (row, col) in zip(channel_sets, SHIFT_TAPS):
        dy, dx = row - 1, col - 1
        if circular:
            out[:, selected] = torch.roll(x[:, selected], (-dy, -dx), dims=(2, 3))
        else:
            source = x[:, selected, _source(dy, height), _source(dx, width)]
            out[:, selected, _target(dy, height), _target(dx, width)] = source
    return out


def _source(offset: int, size: int) -> slice:
    return slice(max(offset, 0), size + min(offset, 0))


def _target(offset: int, size: int) -> slice:
    return slice(max(-offset, 0), size - max(offset, 0))


class InferenceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always uses its running statistics, whatever `.train()` was called with.

    EMT is frozen inside adaptir; if training adapters put this BN into training mode it would
    normalise with batch statistics and overwrite the running buffers, silently changing the base.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class ShiftConv1x1(nn.Conv2d):
    """A fixed zero-padded one-pixel shift per channel block, then a 1x1 convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 1)
        self.channel_sets = shift_conv_channels(in_channels)
        # Stored only so that the checkpoints load strictly; the builder checks a file's masks
        # against this construction, so the shift can be done by copying.
        self.register_buffer("mask", shift_mask(in_channels, self.channel_sets))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(shift_pixels(x, self.channel_sets, circular=False))


class MLP(nn.Module):
    """The feed-forward branch; adapters wrap these modules (`body.{g}.mlp_list.{j}`)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = ShiftConv1x1(dim, hidden)
        self.fc2 = ShiftConv1x1(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        # Written out rather than F.silu: the authors' results are bit-identical only this way,
        # and EMT amplifies last-bit differences (EMT.md section 9, item 12).
        return self.fc2(h * torch.sigmoid(h))


class PixelMixer(nn.Module):
    """Parameter-free cyclic one-pixel shift per channel, held as the checkpoint's `mask`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.channel_sets = pixel_mixer_channels(dim)
        self.register_buffer("mask", shift_mask(dim, self.channel_sets))  # as in ShiftConv1x1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Borders wrap around here, unlike the MLP's zero-filled shift (quirk 5).
        return shift_pixels(x, self.channel_sets, circular=True)


class PixelMixerLayer(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.token_mixer = PixelMixer(dim)
        self.norm = InferenceBatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BN of the difference, not of the shifted map (quirk 6).
        return self.norm(self.token_mixer(x) - x)


def stripe_attention(qv: torch.Tensor, window: tuple[int, int], shifted: bool, heads: int) -> torch.Tensor:
    """Self-attention inside (rows, cols) stripes of a (B, 2*heads*d, H, W) map -> (B, heads*d, H, W).

    Channels are (role, head, component), role-major; role 0 is both query and key, role 1 the
    value. Order matters (quirk 4): reflect-pad bottom/right, roll, attend, roll back, crop.
    """
    batch, channels, height, width = qv.shape
    rows, cols = window
    pad_h, pad_w = -height % rows, -width % cols
    qv = F.pad(qv, (0, pad_w, 0, pad_h), mode="reflect")
    padded_h, padded_w = height + pad_h, width + pad_w
    # The shifted layer rolls by half a window, positively: content moves down and right (quirk 3).
    shift = (rows // 2, cols // 2)
    if shifted:
        qv = torch.roll(qv, shift, dims=(2, 3))
    dim_head = channels // (2 * heads)
    n_rows, n_cols = padded_h // rows, padded_w // cols
    tokens = (
        qv.view(batch, 2, heads, dim_head, n_rows, rows, n_cols, cols)
        .permute(1, 0, 2, 4, 6, 5, 7, 3)
        .reshape(2, batch * heads * n_rows * n_cols, rows * cols, dim_head)
    )
    out = (
        _attend(tokens[0], tokens[1])
        .view(batch, heads, n_rows, n_cols, rows, cols, dim_head)
        .permute(0, 1, 6, 2, 4, 3, 5)
        .reshape(batch, heads * dim_head, padded_h, padded_w)
    )
    if shifted:
        out = torch.roll(out, (-shift[0], -shift[1]), dims=(2, 3))
    return out[:, :, :height, :width]


def _attend(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q q^T) v for (S, N, d) stacks of windows: no 1/sqrt(d) scaling, no position bias,
    no mask for the regions the shift wrapped around (quirk 1).

    Fused calls over all windows: the kernels never hold more than a block of the N x N scores,
    which are N / d (about 25) times larger than q and v. The stack is passed 4-D (S, 1, N, d),
    as 3-D inputs take a slower path that forms every score. Zero components appended to q
    leave q q^T unchanged, and appended to v they give output components that are zero and cut
    off again.
    """
    components = q.shape[-1]
    pad = -components % _HEAD_MULTIPLE
    if pad:
        q, v = F.pad(q, (0, pad)), F.pad(v, (0, pad))
    q, v = q[:, None], v[:, None]
    return window_attention(q, q, v, scale=1.0)[:, 0, :, :components]


class StripedWindowAttention(nn.Module):
    """SWSA: one qkv projection, each half attending in one stripe orientation (quirk 2)."""

    def __init__(self, dim: int, heads: int, shifted: bool) -> None:
        super().__init__()
        self.heads = heads
        self.shifted = shifted
        self.attn = nn.Sequential(nn.Conv2d(dim, 2 * dim, 1), InferenceBatchNorm2d(2 * dim))
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.attn(x).chunk(len(WINDOWS), dim=1)
        out = [stripe_attention(part, window, self.shifted, self.heads) for part, window in zip(parts, WINDOWS)]
        return self.proj(torch.cat(out, dim=1))


class Group(nn.Module):
    def __init__(self, config: EMTConfig) -> None:
        super().__init__()
        self.sa_list = nn.ModuleList(
            # Attention layers alternate unshifted / shifted by half a window (layer 1 in the files).
            StripedWindowAttention(config.dim, config.heads, shifted=j % 2 == 1)
            if j < config.attention_layers
            else PixelMixerLayer(config.dim)
            for j in range(config.layers)
        )
        self.mlp_list = nn.ModuleList(MLP(config.dim, config.dim * config.mlp_ratio) for _ in range(config.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # No normalisation before either branch (quirk 8); MLPs are looked up on every call so
        # that adapter wrappers swapped into `mlp_list` take effect.
        for mixer, mlp in zip(self.sa_list, self.mlp_list):
            x = x + mixer(x)
            x = x + mlp(x)
        return x


class EMT(nn.Module):
    """Lightweight SR network: (N, 3, H, W) in 0..255 -> (N, 3, sH, sW) in 0..255, unclamped."""

    def __init__(self, config: EMTConfig) -> None:
        super().__init__()
        self.config = config
        mean = torch.tensor(DF2K_MEAN) * 255.0
        self.sub_mean = _mean_shift(-mean)
        self.head = nn.Conv2d(3, config.dim, 3, padding=1)
        self.body = nn.ModuleList(Group(config) for _ in range(config.groups))
        self.tail = nn.Sequential(
            nn.Conv2d(config.dim, 3 * config.scale**2, 3, padding=1), nn.PixelShuffle(config.scale)
        )
        self.add_mean = _mean_shift(mean)

    def forward(self, x: torch.Tensor, head: int = 0) -> torch.Tensor:
        if head != 0:
            raise ValueError(f"EMT has a single head (index 0); got head {head}")
        height, width = x.shape[-2:]
        if height < MIN_SIZE or width < MIN_SIZE:
            raise ValueError(
                f"EMT needs inputs of at least {MIN_SIZE}x{MIN_SIZE} pixels, got {height}x{width}; "
                f"process it inside a larger tile or pad the image to {MIN_SIZE} px and crop the output"
            )
        features = self.head(self.sub_mean(x))
        out = features
        for group in self.body:
            out = group(out)
        # The long skip adds the head's features, not the image (quirk 9).
        return self.add_mean(self.tail(out + features))


def _mean_shift(bias: torch.Tensor) -> nn.Conv2d:
    # A real 1x1 conv (identity weight) because the checkpoints store its weight and bias.
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        conv.bias.copy_(bias)
    return conv
