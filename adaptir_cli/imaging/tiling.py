"""Tiled inference: cut an image into overlapping tiles, run a model on batches of them, blend.

Memory stays bounded by one batch of tiles plus the output accumulators, whatever the image
size, and tiles are batched on the image's device so the accelerator stays busy.

Blending is a running weighted mean (acc += w / W * (y - acc), W the weight so far) rather than
sum(w * y) / sum(w): where all tiles agree on a pixel the update adds exactly zero, so a tiled run
of a pointwise or nearest-neighbour model equals the untiled run bit for bit. Weights are
raised-cosine ramps over the overlap, so seams fade out instead of showing (USERS.md pain 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Tile:
    """A box of the input image, in pixels."""

    top: int
    left: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @property
    def right(self) -> int:
        return self.left + self.width

    def region(self, scale: int = 1) -> tuple[slice, slice]:
        """Row and column slices of this box in an image `scale` times larger (the model output)."""
        return (
            slice(self.top * scale, self.bottom * scale),
            slice(self.left * scale, self.right * scale),
        )


def plan_tiles(height: int, width: int, tile: int, overlap: int, multiple: int = 1) -> list[Tile]:
    """Tiles of `tile` x `tile` px covering a `height` x `width` image, in row-major order.

    Neighbours overlap by at least `overlap` px: the stride is `tile - overlap`, and the last
    tile of each row/column is moved back to end exactly at the border (never past it), which
    can only make its overlap larger. Along an axis shorter than the tile there is one tile
    spanning it. `tile` is first rounded down to a multiple of `multiple` (the model's
    preferred size granularity), but not below `multiple`.
    """
    if height < 1 or width < 1:
        raise ValueError(f"cannot tile an empty image ({height}x{width})")
    if multiple > 1:
        tile = max(multiple, tile // multiple * multiple)
    if tile < 1:
        raise ValueError(f"tile size must be at least 1 px, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(
            f"tile overlap must be at least 0 and smaller than the tile ({tile} px), got {overlap}; "
            "lower the overlap or raise the tile size"
        )
    stride = tile - overlap
    return [
        Tile(top, left, min(tile, height), min(tile, width))
        for top in _starts(height, tile, stride)
        for left in _starts(width, tile, stride)
    ]


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if tile >= length:
        return [0]
    return [*range(0, length - tile, stride), length - tile]


def pad_to_size(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad (N, C, H, W) at the bottom and right up to at least `height` x `width`.

    Replicate rather than reflect: reflection needs the pad to be smaller than the image and
    fails on a 5 px image padded to IPT's 48, while replicated edges work for any size and add
    no mirrored structure for the model to react to. Padding only bottom/right means the valid
    output is simply the top-left corner (`crop_to_size`).
    """
    pad_bottom = max(0, height - image.shape[-2])
    pad_right = max(0, width - image.shape[-1])
    if pad_bottom == 0 and pad_right == 0:
        return image
    return F.pad(image, (0, pad_right, 0, pad_bottom), mode="replicate")


def crop_to_size(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The top-left `height` x `width` of (N, C, H, W): undoes `pad_to_size` (after scaling)."""
    return image[..., :height, :width]


def blend_window(
    height: int,
    width: int,
    ramp: int,
    *,
    top: bool,
    bottom: bool,
    left: bool,
    right: bool,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Blending weight (height, width) for one output tile: 1 inside, feathered on chosen sides.

    A side flagged True (it borders another tile) ramps down over `ramp` px with a raised
    cosine sampled at pixel centres, so values stay strictly between 0 and 1 and two opposite
    ramps over the same `ramp` px sum to exactly 1. Sides on the image border keep full
    weight: no other tile covers those pixels. The weight is never zero anywhere.
    """
    rows = _feathered(height, ramp, top, bottom, device)
    cols = _feathered(width, ramp, left, right, device)
    return rows[:, None] * cols[None, :]


def _feathered(length: int, ramp: int, start: bool, end: bool, device: torch.device | str | None) -> torch.Tensor:
    weights = torch.ones(length, dtype=torch.float32, device=device)
    ramp = min(ramp, length)
    if ramp == 0:
        return weights
    centres = (torch.arange(ramp, dtype=torch.float64, device=device) + 0.5) / ramp
    rise = (0.5 - 0.5 * torch.cos(math.pi * centres)).to(torch.float32)
    if start:
        weights[:ramp] = torch.minimum(weights[:ramp], rise)
    if end:
        weights[-ramp:] = torch.minimum(weights[-ramp:], rise.flip(0))
    return weights


RowSink = Callable[[int, torch.Tensor], None]


def run_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    *,
    scale: int,
    tile: int,
    overlap: int,
    batch: int = 1,
    multiple: int = 1,
    fixed_size: int | None = None,
    min_size: int = 1,
    on_tile: Callable[[int, int], None] | None = None,
    sink: RowSink | None = None,
) -> torch.Tensor | None:
    """Run `fn` over `image` (1, C, H, W) tile by tile; returns float32 (1, C', H * scale, W * scale).

    `fn` maps (n, C, h, w) to (n, C', h * scale, w * scale); it gets up to `batch` tiles at a
    time, stacked on the image's device, and runs under torch.no_grad. `tile=0`, or a tile at
    least as large as the image, means one whole-image pass. Images smaller than `min_size` are
    padded up to it (and a smaller tile raised to it). A model that only takes `fixed_size`
    inputs (IPT: 48) gets exactly that: `tile` is ignored, the stride is `fixed_size - overlap`
    and smaller images are padded. `on_tile(done, total)` reports progress after each batch.

    Outputs are blended in a band of rows that moves down the image: rows no later tile can
    reach are final. With `sink`, each finished block of rows goes to `sink(first_row, rows)`
    ((1, C', n, W * scale), float32, on the image's device) and nothing is returned, so memory
    is bounded by the tile batch and one band, not by the (possibly x4-upscaled) image.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"run_tiled takes one image shaped (1, C, H, W), got {tuple(image.shape)}")
    if scale < 1 or batch < 1:
        raise ValueError(f"scale and batch must be at least 1, got scale={scale}, batch={batch}")
    height, width = image.shape[-2:]
    if fixed_size is not None:
        tile, min_size, multiple = fixed_size, max(min_size, fixed_size), 1
    elif tile > 0:
        tile = max(tile, min_size)
    padded = pad_to_size(image, max(height, min_size), max(width, min_size))
    padded_height, padded_width = padded.shape[-2:]
    if tile <= 0 or (tile >= padded_height and tile >= padded_width):
        tiles = [Tile(0, 0, padded_height, padded_width)]
    else:
        tiles = plan_tiles(padded_height, padded_width, tile, overlap, multiple)

    out_height, out_width = height * scale, width * scale
    result: list[torch.Tensor] = []
    if sink is None:
        def sink(first_row: int, rows: torch.Tensor) -> None:
            if not result:
                result.append(rows.new_empty(1, rows.shape[1], out_height, out_width))
            result[0][..., first_row : first_row + rows.shape[-2], :] = rows

    def finish(band: _Band, up_to: int) -> None:
        """Hand rows [band.top, up_to) of the output, cropped to the image, to the sink."""
        rows = band.take(up_to)
        keep = min(up_to, out_height) - (up_to - rows.shape[-2])
        if keep > 0:
            sink(up_to - rows.shape[-2], rows[..., :keep, :out_width])

    band: _Band | None = None
    windows: dict[tuple[bool, bool, bool, bool], torch.Tensor] = {}
    for first in range(0, len(tiles), batch):
        chunk = tiles[first : first + batch]
        inputs = torch.cat([padded[(..., *box.region())] for box in chunk])
        with torch.no_grad():
            outputs = fn(inputs)
        _check_output(outputs, chunk[0], len(chunk), scale)
        if band is None:
            band = _Band(outputs.shape[1], padded_width * scale, image.device)
        band.reserve(max(box.bottom for box in chunk) * scale)
        for box, output in zip(chunk, outputs):
            sides = (box.top > 0, box.bottom < padded_height, box.left > 0, box.right < padded_width)
            if sides not in windows:
                top, bottom, left, right = sides
                windows[sides] = blend_window(
                    box.height * scale, box.width * scale, overlap * scale,
                    top=top, bottom=bottom, left=left, right=right, device=image.device,
                )
            band.blend(box, scale, output, windows[sides])
        # Tiles come in row-major order: rows above the next tile's top are final.
        finish(band, tiles[first + batch].top * scale if first + batch < len(tiles) else padded_height * scale)
        if on_tile is not None:
            on_tile(min(first + batch, len(tiles)), len(tiles))
    return result[0] if result else None


class _Band:
    """Weighted running means of the output rows that tiles may still contribute to."""

    def __init__(self, channels: int, width: int, device: torch.device) -> None:
        self.top = 0
        self.values = torch.zeros(1, channels, 0, width, device=device)
        self.weights = torch.zeros(1, 1, 0, width, device=device)

    def reserve(self, bottom: int) -> None:
        missing = bottom - self.top - self.values.shape[-2]
        if missing > 0:
            self.values = torch.cat([self.values, self.values.new_zeros(*self.values.shape[:2], missing, self.values.shape[-1])], -2)
            self.weights = torch.cat([self.weights, self.weights.new_zeros(1, 1, missing, self.weights.shape[-1])], -2)

    def blend(self, box: Tile, scale: int, output: torch.Tensor, window: torch.Tensor) -> None:
        rows, cols = box.region(scale)
        rows = slice(rows.start - self.top, rows.stop - self.top)
        seen = self.weights[0, 0, rows, cols]
        seen += window
        # A running weighted mean rather than sum(w * y) / sum(w): where overlapping tiles agree,
        # this adds exactly zero, so tiling a tiling-invariant model is bit-exact.
        blended = self.values[0, :, rows, cols]
        blended += (window / seen) * (output.to(torch.float32) - blended)

    def take(self, up_to: int) -> torch.Tensor:
        count = up_to - self.top
        done = self.values[..., :count, :]
        self.values = self.values[..., count:, :]
        self.weights = self.weights[..., count:, :]
        self.top = up_to
        return done


def _check_output(outputs: torch.Tensor, box: Tile, count: int, scale: int) -> None:
    expected = (count, box.height * scale, box.width * scale)
    if outputs.dim() != 4 or (outputs.shape[0], *outputs.shape[-2:]) != expected:
        raise ValueError(
            f"the model returned {tuple(outputs.shape)} for {count} tile(s) of {box.height}x{box.width} px; "
            f"expected {count} outputs of {expected[1]}x{expected[2]} (scale {scale})"
        )
