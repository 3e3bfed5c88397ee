"""CompactIR: adaptir's own small multi-task restoration transformer (the shipped default base).

Built like IPT - one head and one tail per task around a shared transformer body - but sized for a
2-core CPU and for images of any size:
- the body is a stack of Swin-style blocks (window self-attention, alternately shifted, with a
  learned relative-position bias) on an (N, dim, H, W) feature map, so no fixed patch size;
- x1 heads pixel-unshuffle by 2 and their tails pixel-shuffle by 2, so denoising or deraining a
  512 x 512 image runs the body on 256 x 256 (4x cheaper); SR heads run the body at LR resolution;
- the output is a correction added to the input (x1) or to its bicubic up-sampling (SR), and the
  last conv of every tail starts at zero: a freshly built model is the identity / bicubic;
- with `refine` > 0 a tail's sub-pixel conv makes `refine` channels at the output resolution and
  one more 3x3 conv there, which also sees the input, mixes the 2x2 phases: without it, every
  output pixel of a 2x2 cell comes from its own channel of the half-resolution body, and an
  adapter's small error per channel shows as a 2-pixel checkerboard on flat areas.

Each block's feed-forward is the submodule `body.{i}.mlp` and receives exactly norm2(x), so that
AdaptIR adapters wrap it from outside as the paper places them.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adaptir_cli.bases.attention import window_attention
from adaptir_cli.bases.layers import ChannelLayerNorm

# x1 heads run the body at 1/X1_BODY_STRIDE of the image resolution (pixel-unshuffle in the head).
X1_BODY_STRIDE = 2
# The five heads the shipped default is pre-trained for (issue 4): blind denoising, light rain, SR.
DEFAULT_TASKS: tuple[tuple[str, int], ...] = (("denoise", 1), ("derain", 1), ("sr2", 2), ("sr3", 3), ("sr4", 4))
_SR_NAME = re.compile(r"sr(\d+)")


@dataclass(frozen=True)
class CompactIRConfig:
    """Hyper-parameters. `tasks` are (head name, output scale) pairs, kept sorted by name because a
    head's index in `forward(x, head)` is its position in the sorted names."""

    dim: int = 48
    blocks: int = 8
    heads: int = 3
    window: int = 8
    mlp_ratio: int = 2
    tasks: tuple[tuple[str, int], ...] = DEFAULT_TASKS
    refine: int = 0  # channels of the tails' output-resolution conv; 0: the first design, without it

    def __post_init__(self) -> None:
        for name in ("dim", "blocks", "heads", "window", "mlp_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CompactIRConfig.{name} must be a positive integer, got {value!r}")
        if isinstance(self.refine, bool) or not isinstance(self.refine, int) or self.refine < 0:
            raise ValueError(f"CompactIRConfig.refine must be an integer >= 0, got {self.refine!r}")
        if self.dim % self.heads:
            raise ValueError(f"CompactIR dim {self.dim} must be divisible by heads {self.heads}")
        if self.window % 2:
            # Shifted blocks move the windows by half a window.
            raise ValueError(f"CompactIR window {self.window} must be even")
        tasks = tuple(sorted((str(name), int(scale)) for name, scale in self.tasks))
        names = [name for name, _ in tasks]
        if not tasks:
            raise ValueError("CompactIR needs at least one task (tasks is empty)")
        if len(set(names)) != len(names):
            raise ValueError(f"CompactIR task names must be unique, got {names}")
        for name, scale in tasks:
            if not name or "." in name:
                raise ValueError(f"CompactIR task name {name!r} must be non-empty and contain no '.'")
            if scale < 1:
                raise ValueError(f"CompactIR task {name!r} has scale {scale}; scales are integers >= 1")
            if (match := _SR_NAME.fullmatch(name)) and int(match.group(1)) != scale:
                raise ValueError(f"CompactIR task {name!r} must have scale {match.group(1)}, not {scale}")
        object.__setattr__(self, "tasks", tasks)

    @property
    def head_names(self) -> list[str]:
        return [name for name, _ in self.tasks]

    @property
    def size_multiple(self) -> int:
        """Input side multiple that needs no internal padding for any head."""
        return self.window * X1_BODY_STRIDE


def body_stride(scale: int) -> int:
    """How much smaller than the input the body's feature map is for a head of this scale."""
    return X1_BODY_STRIDE if scale == 1 else 1


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom/right of (N, C, H, W) to multiples of `multiple`.

    Reflect padding keeps image statistics at the border; torch only reflects a pad smaller than
    the side, so tiny images (a side below the pad) are padded by replication instead.
    """
    for dim in (-1, -2):
        size = x.shape[dim]
        pad = -size % multiple
        if pad:
            mode = "reflect" if pad < size else "replicate"
            x = F.pad(x, (0, pad, 0, 0) if dim == -1 else (0, 0, 0, pad), mode=mode)
    return x


def relative_position_index(window: int) -> torch.Tensor:
    """(L, L) index into a (2w-1)^2 table of the row/column offset between two window pixels."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack((rows.flatten(), cols.flatten()))
    offsets = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return offsets[0] * (2 * window - 1) + offsets[1]


def window_order(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """(windows, window^2) flat pixel indices of an (H, W) map cut into windows, both row-major,
    the window grid moved by `shift` pixels and wrapping around the map (Swin's cyclic roll).

    Gathering tokens in this order does the roll and the window partition in a single copy.
    """
    pixels = torch.arange(height * width).reshape(height, width).roll((-shift, -shift), (0, 1))
    grid = pixels.reshape(height // window, window, width // window, window)
    return grid.permute(0, 2, 1, 3).reshape(-1, window * window)


@dataclass(frozen=True)
class WindowCut:
    """One way of cutting a feature map into windows: the token gather order and its inverse.

    The last `wrapping` windows wrap around the map (shifted cuts only); they hold pixels from
    opposite borders that must not attend to each other, which `wrap_mask` (wrapping, 1, L, L)
    forbids with -inf. Keeping them last lets every other window share one small bias mask.
    """

    order: torch.Tensor
    inverse: torch.Tensor
    count: int
    wrapping: int
    wrap_mask: torch.Tensor | None


# Window cuts are kept per (map size, window, shift, device): a tiled restore or a training run
# meets a handful of sizes, and building the indices on the CPU and copying them to the device in
# every forward makes a GPU wait for the host. Maps above this size (a 1024 x 1024 body map: 16 MB
# of indices) are cut afresh: their forward costs far more than their indices, and keeping those
# would hold the memory for image sizes that may never come again.
CACHED_CUT_PIXELS = 1024 * 1024


def cut_windows(height: int, width: int, window: int, shifted: bool, device: torch.device | str) -> WindowCut:
    """Plain windows, or windows shifted by half a window (alternate blocks, as Swin), on an
    (H, W) map whose sides are multiples of `window`.

    The result is shared between calls (see CACHED_CUT_PIXELS): never modify its tensors.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # one cache entry for "cuda" and "cuda:0"
        device = torch.device("cuda", torch.cuda.current_device())
    if height * width > CACHED_CUT_PIXELS:
        return _build_cut(height, width, window, shifted, device)
    return _cached_cut(height, width, window, shifted, device)


@functools.lru_cache(maxsize=16)
def _cached_cut(height: int, width: int, window: int, shifted: bool, device: torch.device) -> WindowCut:
    # Normal tensors even when the first caller runs under inference_mode: a training step that
    # later gathers with them saves them for backward, which inference tensors refuse.
    with torch.inference_mode(False):
        return _build_cut(height, width, window, shifted, device)


def _build_cut(height: int, width: int, window: int, shifted: bool, device: torch.device) -> WindowCut:
    shift = window // 2 if shifted else 0
    order = window_order(height, width, window, shift)
    wrap_mask = None
    wrapping = 0
    if shift:
        rows, cols = height // window, width // window
        grid = torch.arange(rows * cols)
        wraps = (grid // cols == rows - 1) | (grid % cols == cols - 1)
        order = torch.cat((order[~wraps], order[wraps]))
        wrapping = int(wraps.sum())
        # Only the first `shift` rows/columns of the map wrap around, so (row wrapped, column
        # wrapped) tells the regions apart.
        wrapped = order[-wrapping:]
        region = (wrapped // width < shift).long() * 2 + (wrapped % width < shift).long()
        different = region[:, :, None] != region[:, None, :]
        wrap_mask = torch.zeros(different.shape).masked_fill(different, float("-inf"))[:, None].to(device)
    order = order.flatten().to(device)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=device)
    return WindowCut(order, inverse, (height // window) * (width // window), wrapping, wrap_mask)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside window x window windows, with a relative-position bias.

    The bias table (heads, (2w-1)^2) also records `heads` and `window` in the weights' shapes,
    which is how a checkpoint's hyper-parameters are recovered.
    """

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.window = window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_bias = nn.Parameter(torch.empty(heads, (2 * window - 1) ** 2))
        nn.init.trunc_normal_(self.relative_bias, std=0.02)
        self.register_buffer("bias_index", relative_position_index(window), persistent=False)

    def forward(self, x: torch.Tensor, cut: WindowCut) -> torch.Tensor:
        """x: (N, C, H, W) with H and W multiples of the window, cut into windows as `cut` says."""
        n, c, h, w = x.shape
        # Channels-last pixels (a view when x is channels_last), gathered window by window.
        tokens = torch.index_select(x.permute(0, 2, 3, 1).reshape(n, h * w, c), 1, cut.order)
        qkv = self.qkv(tokens).reshape(n, cut.count, self.window**2, 3, self.heads, c // self.heads)
        qkv = qkv.permute(3, 0, 1, 4, 2, 5)  # (3, N, windows, heads, L, head_dim)
        # 4-D masks keep torch's fused CPU attention kernel (a 3-D one falls back to a path that
        # materialises every score and is ~5x slower).
        bias = self.relative_bias[:, self.bias_index][None]
        plain = cut.count - cut.wrapping
        parts = []
        if plain:
            parts.append(_attend(qkv[:, :, :plain], bias))
        if cut.wrapping:
            parts.append(_attend(qkv[:, :, plain:], (cut.wrap_mask + bias).repeat(n, 1, 1, 1)))
        out = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        out = self.proj(out.transpose(2, 3).reshape(n, h * w, c))
        return torch.index_select(out, 1, cut.inverse).reshape(n, h, w, c).permute(0, 3, 1, 2)


def _attend(qkv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention of (3, N, windows, heads, L, head_dim) windows -> (N, windows, heads, L, head_dim)."""
    n = qkv.shape[1]
    q, k, v = qkv.flatten(1, 2).unbind(0)
    return window_attention(q, k, v, mask.to(q.dtype)).unflatten(0, (n, -1))


class MLP(nn.Module):
    """The transformer feed-forward: 1x1 expand, GELU, depthwise 3x3, 1x1 back.

    The depthwise conv gives every block local context across window borders. AdaptIR adapters
    run beside this module, fed with the same input.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dwconv(F.gelu(self.fc1(x))))


class Block(nn.Module):
    def __init__(self, config: CompactIRConfig, shifted: bool) -> None:
        super().__init__()
        self.shifted = shifted
        self.norm1 = ChannelLayerNorm(config.dim)
        self.attn = WindowAttention(config.dim, config.heads, config.window)
        self.norm2 = ChannelLayerNorm(config.dim)
        self.mlp = MLP(config.dim, config.dim * config.mlp_ratio)

    def forward(self, x: torch.Tensor, cuts: dict[bool, WindowCut]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cuts[self.shifted])
        # norm2 stays outside `mlp`, so an adapter wrapping `mlp` receives norm2(x) as well.
        return x + self.mlp(self.norm2(x))


class TaskHead(nn.Module):
    """Lifts RGB to the body's width; x1 heads first fold 2x2 pixels into channels."""

    def __init__(self, scale: int, dim: int) -> None:
        super().__init__()
        self.stride = body_stride(scale)
        self.conv = nn.Conv2d(3 * self.stride**2, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.pixel_unshuffle(x, self.stride)
        return self.conv(x)


class TaskTail(nn.Module):
    """Sub-pixel conv from the body's map back to RGB at `scale` x the input size, or, with
    `refine` > 0, to `refine` channels there and a 3x3 conv over them and the input's up-sampling.

    The last conv starts at zero so that an untrained tail adds nothing to the global residual.
    """

    def __init__(self, scale: int, dim: int, refine: int = 0) -> None:
        super().__init__()
        self.factor = scale * body_stride(scale)
        self.conv = nn.Conv2d(dim, (refine or 3) * self.factor**2, 3, padding=1)
        self.refine = nn.Conv2d(refine + 3, 3, 3, padding=1) if refine else None
        last = self.refine if self.refine is not None else self.conv
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, f: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """`base` is the global residual at the output size (the input or its up-sampling)."""
        out = F.pixel_shuffle(self.conv(f), self.factor)
        if self.refine is None:
            return out
        out = out[:, :, : base.shape[-2], : base.shape[-1]]
        return self.refine(torch.cat((F.gelu(out), base), dim=1))


class CompactIR(nn.Module):
    """Multi-task restoration network; input RGB in [0, 1], output unclamped at the head's scale."""

    def __init__(self, config: CompactIRConfig) -> None:
        super().__init__()
        self.config = config
        self.head_names = config.head_names
        self.scales = dict(config.tasks)
        self.heads = nn.ModuleDict({name: TaskHead(scale, config.dim) for name, scale in config.tasks})
        self.body = nn.ModuleList(Block(config, shifted=i % 2 == 1) for i in range(config.blocks))
        # Long skip over the body, as in SwinIR: the blocks learn a residual on the head's features.
        self.body_end = nn.Conv2d(config.dim, config.dim, 3, padding=1)
        self.tails = nn.ModuleDict({name: TaskTail(scale, config.dim, config.refine) for name, scale in config.tasks})

    def forward(self, x: torch.Tensor, head: int = 0) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"CompactIR expects an (N, 3, H, W) RGB batch; got shape {tuple(x.shape)}")
        if not 0 <= head < len(self.head_names):
            raise ValueError(
                f"CompactIR head index {head} is out of range; this model has "
                f"{len(self.head_names)} heads: {', '.join(self.head_names)}"
            )
        name = self.head_names[head]
        scale = self.scales[name]
        height, width = x.shape[-2:]
        f = self.heads[name](pad_to_multiple(x, self.config.window * body_stride(scale)))
        # The body works channels-last: layer norms, window gathers and 1x1 convs then need no copies.
        f = f.contiguous(memory_format=torch.channels_last)
        # Both window cuts depend only on the map size: shared by every block (and cached).
        size = f.shape[-2:]
        cuts = {shifted: cut_windows(*size, self.config.window, shifted, f.device) for shifted in (False, True)}
        features = f
        for block in self.body:
            features = block(features, cuts)
        f = f + self.body_end(features)
        base = upsample(x, scale)
        return self.tails[name](f, base)[:, :, : scale * height, : scale * width] + base


def upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """The global residual: the input itself (x1) or its bicubic up-sampling (SR)."""
    if scale == 1:
        return x
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


def infer_scale(head_in_channels: int, tail_out_channels: int, tail_channels: int = 3) -> int:
    """Output scale of a head/tail pair: tail factor / head stride (x1 and sr2 tails are both 12-wide).

    `tail_channels` is what the sub-pixel conv makes per output pixel: 3 (RGB), or `refine`.
    """
    stride = math.isqrt(head_in_channels // 3)
    factor = math.isqrt(tail_out_channels // tail_channels)
    if 3 * stride**2 != head_in_channels or tail_channels * factor**2 != tail_out_channels or factor % stride:
        raise ValueError(
            f"head input width {head_in_channels} and tail output width {tail_out_channels} "
            f"are not 3 x stride^2 and {tail_channels} x (scale x stride)^2"
        )
    scale = factor // stride
    if body_stride(scale) != stride:
        raise ValueError(f"a x{scale} head must have body stride {body_stride(scale)}, not {stride}")
    return scale
