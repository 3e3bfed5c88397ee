"""Tiled inference: cut an image into overlapping tiles, run a model on batches of them, stitch.

Memory stays bounded by one batch of tiles, whatever the image size: each tile's share of the
output goes to a sink as soon as it is computed, so neither the (possibly x4-upscaled) float
result nor any accumulator of the image's size is held. Tiles are batched on the image's device
so the accelerator stays busy.

Stitching rather than blending: the overlap of two neighbours is cut in its middle and each side
comes from the tile it lies deeper inside. A blend weighs in the pixels next to a tile's edge,
those with the least context; with the cut, every output pixel is at least `overlap // 2` px
away from the edge of the tile it comes from, so a model whose receptive field is at most
`overlap + 1` px wide tiles exactly (a stack of k 3x3 convolutions: overlap >= 2k), and the
restorer's default overlaps (each base's `tile_overlap`) keep tiled results within 0.01 dB of
whole-image ones, with no seam to hide (USERS.md pain 3; docs/performance.md). Tile starts are
multiples of the model's size multiple, so tiles cut the image into attention windows exactly as
the whole-image pass does: misaligned windows change every pixel of a tile, not only its edges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Tile:
    """A box of the input image, in pixels, and the part of it whose output this tile supplies.

    `keep` is (top, left, bottom, right) in image coordinates, inside the box; it defaults to the
    whole box (a single tile).
    """

    top: int
    left: int
    height: int
    width: int
    keep: tuple[int, int, int, int] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.keep is None:
            object.__setattr__(self, "keep", (self.top, self.left, self.bottom, self.right))

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
    """Tiles of about `tile` x `tile` px covering a `height` x `width` image, in row-major order.

    `tile` is first rounded down to a multiple of `multiple` (the model's window or padding
    granularity), but not below `multiple`. Neighbours overlap by at least `overlap` px: the
    stride is `tile - overlap` rounded down to a multiple of `multiple` (where it is at least
    that), so every tile starts on the model's window grid. The last tile of each row/column also
    starts on that grid and reaches the border, so it is up to `multiple - 1` px larger than the
    others. Along an axis shorter than the tile there is one tile spanning it. Each tile keeps the
    output up to the middle of its overlaps with its neighbours (`Tile.keep`); the kept parts
    partition the image.
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
    if stride >= multiple:  # else the grid is coarser than the stride: the overlap matters more
        stride = stride // multiple * multiple
    rows = _spans(height, tile, stride, multiple)
    cols = _spans(width, tile, stride, multiple)
    return [
        Tile(top, left, row_size, col_size, keep=(row_keep[0], col_keep[0], row_keep[1], col_keep[1]))
        for top, row_size, row_keep in rows
        for left, col_size, col_keep in cols
    ]


def _spans(length: int, tile: int, stride: int, multiple: int) -> list[tuple[int, int, tuple[int, int]]]:
    """(start, size, (keep_start, keep_stop)) of the tiles along one axis."""
    if tile >= length:
        return [(0, length, (0, length))]
    last = (length - tile) // multiple * multiple
    starts = [*range(0, last, stride), last]
    stops = [start + tile for start in starts[:-1]] + [length]
    # Cut each overlap in its middle: both sides then lie at least overlap // 2 px inside their tile.
    cuts = [0] + [(start + stop) // 2 for start, stop in zip(starts[1:], stops[:-1])] + [length]
    return [(start, stop - start, (cuts[i], cuts[i + 1])) for i, (start, stop) in enumerate(zip(starts, stops))]


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


def mirror_border(image: torch.Tensor, border: int) -> torch.Tensor:
    """(N, C, H, W) with `border` pixels mirrored onto every side (replicated where a side is too
    short to mirror that many)."""
    if border <= 0:
        return image
    mode = "reflect" if border < min(image.shape[-2:]) else "replicate"
    return F.pad(image, (border, border, border, border), mode=mode)


def crop_to_size(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The top-left `height` x `width` of (N, C, H, W): undoes `pad_to_size` (after scaling)."""
    return image[..., :height, :width]


# Receives each tile's share of the output: sink(top, left, block), block (1, C', h, w) float32 on the
# image's device, at (top, left) of the output. The blocks partition the output exactly once.
RegionSink = Callable[[int, int, torch.Tensor], None]


def _padded_shape(height: int, width: int, *, border: int, min_size: int, fixed_size: int | None) -> tuple[int, int]:
    """The side lengths `run_tiled` cuts into: the image grown by `border` on every side, then
    padded up to `min_size` (and to `fixed_size` for a fixed-input model)."""
    least = max(min_size, fixed_size or 0)
    return max(height + 2 * border, least), max(width + 2 * border, least)


def tile_boxes(
    height: int,
    width: int,
    *,
    tile: int,
    overlap: int,
    multiple: int = 1,
    fixed_size: int | None = None,
    min_size: int = 1,
    border: int = 0,
) -> list[Tile]:
    """The tiles `run_tiled` cuts a `height` x `width` image into, with the same arguments: a
    caller can size the tile batch before the run (boxes lie in the image grown by `border` on
    every side and padded to `min_size`)."""
    padded_height, padded_width = _padded_shape(height, width, border=border, min_size=min_size, fixed_size=fixed_size)
    if fixed_size is not None:
        tile, multiple = fixed_size, 1
    elif tile > 0:
        tile = max(tile, min_size)
    if tile <= 0 or (tile >= padded_height and tile >= padded_width):
        return [Tile(0, 0, padded_height, padded_width)]
    return plan_tiles(padded_height, padded_width, tile, overlap, multiple)


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
    border: int = 0,
    on_tile: Callable[[int, int], None] | None = None,
    sink: RegionSink | None = None,
) -> torch.Tensor | None:
    """Run `fn` over `image` (1, C, H, W) tile by tile; returns float32 (1, C', H * scale, W * scale).

    `fn` maps (n, C, h, w) to (n, C', h * scale, w * scale); it gets up to `batch` tiles of one
    size at a time, stacked on the image's device, and runs under torch.no_grad. `tile=0`, or a
    tile at least as large as the image, means one whole-image pass. Images smaller than
    `min_size` are padded up to it (and a smaller tile raised to it). A model that only takes
    `fixed_size` inputs (IPT: 48) gets exactly that: `tile` is ignored, the stride is
    `fixed_size - overlap` and smaller images are padded. `on_tile(done, total)` reports progress
    after each batch. `border` > 0 mirrors that many pixels around the image first (a model whose
    convolutions pad with zeros then sees image-like context at the border) and keeps only the
    image's own part of the output.

    With `sink`, each tile's kept part of the output goes to `sink(top, left, block)` as soon as
    the tile is done and nothing is returned, so memory is bounded by the tile batch, not by the
    (possibly x4-upscaled) image.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"run_tiled takes one image shaped (1, C, H, W), got {tuple(image.shape)}")
    if scale < 1 or batch < 1:
        raise ValueError(f"scale and batch must be at least 1, got scale={scale}, batch={batch}")
    height, width = image.shape[-2:]
    tiles = tile_boxes(height, width, tile=tile, overlap=overlap, multiple=multiple, fixed_size=fixed_size,
                       min_size=min_size, border=border)
    padded = pad_to_size(mirror_border(image, border),
                         *_padded_shape(height, width, border=border, min_size=min_size, fixed_size=fixed_size))

    result: list[torch.Tensor] = []
    if sink is None:
        def sink(top: int, left: int, block: torch.Tensor) -> None:
            if not result:
                result.append(block.new_empty(1, block.shape[1], height * scale, width * scale))
            result[0][..., top : top + block.shape[-2], left : left + block.shape[-1]] = block

    done = 0
    for chunk in _batches(tiles, batch):
        inputs = torch.cat([padded[(..., *box.region())] for box in chunk])
        with torch.no_grad():
            outputs = fn(inputs)
        _check_output(outputs, chunk[0], len(chunk), scale)
        for box, output in zip(chunk, outputs):
            # The kept part, less the mirrored border and any padding beyond the image's bottom/right.
            top, left, bottom, right = box.keep
            top, left = max(top, border), max(left, border)
            bottom, right = min(bottom, border + height), min(right, border + width)
            if bottom > top and right > left:
                rows = slice((top - box.top) * scale, (bottom - box.top) * scale)
                cols = slice((left - box.left) * scale, (right - box.left) * scale)
                sink((top - border) * scale, (left - border) * scale, output[None, :, rows, cols].to(torch.float32))
        done += len(chunk)
        if on_tile is not None:
            on_tile(done, len(tiles))
    return result[0] if result else None


def _batches(tiles: list[Tile], size: int) -> Iterator[list[Tile]]:
    """Runs of at most `size` consecutive tiles of one shape (the last row/column may differ)."""
    chunk: list[Tile] = []
    for box in tiles:
        if chunk and (len(chunk) == size or (box.height, box.width) != (chunk[0].height, chunk[0].width)):
            yield chunk
            chunk = []
        chunk.append(box)
    if chunk:
        yield chunk


def _check_output(outputs: torch.Tensor, box: Tile, count: int, scale: int) -> None:
    expected = (count, box.height * scale, box.width * scale)
    if outputs.dim() != 4 or (outputs.shape[0], *outputs.shape[-2:]) != expected:
        raise ValueError(
            f"the model returned {tuple(outputs.shape)} for {count} tile(s) of {box.height}x{box.width} px; "
            f"expected {count} outputs of {expected[1]}x{expected[2]} (scale {scale})"
        )
