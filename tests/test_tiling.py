"""Tiling, padding and stitching: a tiled run must reproduce the whole-image run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from adaptir_cli.imaging.tiling import (
    Tile,
    crop_to_size,
    mirror_border,
    pad_to_size,
    plan_tiles,
    run_tiled,
)


def pointwise(x: torch.Tensor) -> torch.Tensor:
    """Mixes channels per pixel, non-linearly: tiling must not change a single value. Elementwise
    operations only, each its own kernel: a matrix product's (einsum's) rounding depends on the
    tensor's shape, and a padded tile is another shape (1 ulp apart on some CPUs)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    mixed = torch.cat([0.5 * r + 0.3 * g + 0.2 * b, -0.1 * r + 0.9 * g + 0.2 * b, 0.3 * r - 0.4 * g + 1.1 * b], dim=1)
    return mixed * mixed * 0.8 + 0.1


def nearest_x4(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=4, mode="nearest") * 0.7 + 0.1


def blur3_x2(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False).repeat_interleave(2, -1).repeat_interleave(2, -2)


def blur3(x: torch.Tensor) -> torch.Tensor:
    """3x3 box blur, receptive field radius 1: only tile edges see something different."""
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def conv_model(radius: int, scale: int) -> torch.nn.Module:
    """`radius` zero-padded 3x3 convolutions, then a sub-pixel upscale: receptive field 2 * radius + 1 px."""
    torch.manual_seed(radius * 10 + scale)
    layers: list[torch.nn.Module] = []
    channels = 3
    for _ in range(radius):
        layers += [torch.nn.Conv2d(channels, 6, 3, padding=1), torch.nn.Tanh()]
        channels = 6
    layers += [torch.nn.Conv2d(channels, 3 * scale * scale, 1), torch.nn.PixelShuffle(scale)]
    return torch.nn.Sequential(*layers).eval()


CONV_MODELS = {(radius, scale): conv_model(radius, scale) for radius in range(4) for scale in (1, 2, 3)}


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    height=st.integers(1, 48), width=st.integers(1, 48), tile=st.integers(8, 32), extra=st.integers(0, 12),
    radius=st.integers(0, 3), scale=st.sampled_from([1, 2, 3]), multiple=st.sampled_from([1, 4, 8]),
    batch=st.integers(1, 3),
)
def test_tiled_runs_match_whole_image_runs(
    height: int, width: int, tile: int, extra: int, radius: int, scale: int, multiple: int, batch: int
) -> None:
    """A model whose receptive field is r = 2 * radius + 1 px wide tiles exactly once tiles
    overlap by r - 1 px or more (up to float rounding), for any image, tile, grid and scale;
    a pointwise model tiles bit for bit at any overlap."""
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height * 61 + width))
    rounded = max(multiple, tile // multiple * multiple)
    overlap = min(2 * radius + extra, rounded - 1)
    model = CONV_MODELS[(radius, scale)]
    with torch.no_grad():
        whole = model(image)
    tiled = run_tiled(model, image, scale=scale, tile=tile, overlap=overlap, batch=batch, multiple=multiple)
    if overlap >= 2 * radius:
        assert torch.allclose(tiled, whole, rtol=0, atol=1e-5)
    point = run_tiled(nearest_x4, image, scale=4, tile=tile, overlap=extra % rounded, batch=batch, multiple=multiple)
    assert torch.equal(point, nearest_x4(image))


@pytest.mark.parametrize("height,width", [(37, 53), (16, 16), (9, 30), (64, 40), (1, 1)])
@pytest.mark.parametrize("overlap", [0, 5])
@pytest.mark.parametrize("batch", [1, 3])
def test_pointwise_and_nearest_models_tile_exactly(height: int, width: int, overlap: int, batch: int) -> None:
    image = torch.rand(1, 3, height, width)
    for fn, scale in ((pointwise, 1), (nearest_x4, 4)):
        tiled = run_tiled(fn, image, scale=scale, tile=16, overlap=overlap, batch=batch)
        assert torch.equal(tiled, fn(image))


def test_fixed_size_model_gets_only_its_size_and_tiles_exactly() -> None:
    seen: set[tuple[int, int]] = set()

    def fixed_model(x: torch.Tensor) -> torch.Tensor:
        seen.add(tuple(x.shape[-2:]))
        return nearest_x4(x)

    for height, width in ((10, 7), (40, 33), (16, 16)):
        image = torch.rand(1, 3, height, width)
        tiled = run_tiled(fixed_model, image, scale=4, tile=0, overlap=6, batch=4, fixed_size=16)
        assert torch.equal(tiled, nearest_x4(image))
    assert seen == {(16, 16)}


def test_small_image_is_padded_to_min_size() -> None:
    seen: list[tuple[int, int]] = []

    def needs_eight(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[-2:]))
        return pointwise(x)

    image = torch.rand(1, 3, 5, 3)
    assert torch.equal(run_tiled(needs_eight, image, scale=1, tile=4, overlap=1, min_size=8), pointwise(image))
    assert seen == [(8, 8)]


def test_kept_parts_partition_the_image_and_stay_away_from_tile_edges() -> None:
    for height, width, tile, overlap, multiple in ((37, 53, 16, 5, 1), (100, 20, 24, 23, 1), (48, 48, 16, 0, 1), (130, 75, 32, 9, 8)):
        tiles = plan_tiles(height, width, tile, overlap, multiple)
        cover = torch.zeros(height, width, dtype=torch.int64)
        for box in tiles:
            assert 0 <= box.top < box.bottom <= height and 0 <= box.left < box.right <= width
            top, left, bottom, right = box.keep
            cover[top:bottom, left:right] += 1
            # Away from the image border a kept pixel is at least overlap // 2 px inside its tile.
            assert top == 0 or top - box.top >= overlap // 2
            assert left == 0 or left - box.left >= overlap // 2
            assert bottom == height or box.bottom - bottom >= overlap // 2
            assert right == width or box.right - right >= overlap // 2
        assert torch.equal(cover, torch.ones(height, width, dtype=torch.int64))
    ones = run_tiled(lambda x: torch.ones_like(x), torch.rand(1, 3, 37, 53), scale=1, tile=16, overlap=5, batch=2)
    assert torch.equal(ones, torch.ones(1, 3, 37, 53))


def test_plan_overlaps_and_border_alignment() -> None:
    tiles = plan_tiles(50, 30, 20, 6)
    rows = sorted({box.top for box in tiles})
    cols = sorted({box.left for box in tiles})
    assert rows == [0, 14, 28, 30] and cols == [0, 10]
    assert all(box.height == 20 and box.width == 20 for box in tiles)
    assert plan_tiles(10, 12, 64, 8) == [Tile(0, 0, 10, 12)]
    # Rounded down to the model's multiple (30 -> 24), starting on its grid; the last tile grows
    # by less than the multiple to reach the border from a grid position.
    grid = plan_tiles(100, 100, 30, 4, multiple=8)
    assert {box.top for box in grid} == {0, 16, 32, 48, 64, 72}
    assert {box.height for box in grid} == {24, 28}
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(100, 100, 16, 16)


def test_smooth_model_shows_no_seam() -> None:
    image = torch.rand(1, 3, 70, 90)
    whole = blur3(image)
    stitched = run_tiled(blur3, image, scale=1, tile=32, overlap=16, batch=4)
    assert (stitched - whole).abs().max() < 0.5 / 255
    # Without overlap the tile edges do differ: the check above can see a seam.
    seamed = run_tiled(blur3, image, scale=1, tile=32, overlap=0, batch=4)
    assert (seamed - whole).abs().max() > 0.5 / 255


def test_batches_bounded_and_progress_reported() -> None:
    sizes: list[int] = []
    progress: list[tuple[int, int]] = []

    def model(x: torch.Tensor) -> torch.Tensor:
        sizes.append(x.shape[0])
        return x

    run_tiled(model, torch.rand(1, 3, 50, 50), scale=1, tile=16, overlap=4, batch=3,
              on_tile=lambda done, total: progress.append((done, total)))
    assert max(sizes) == 3 and sum(sizes) == 16
    assert progress[-1] == (16, 16) and [done for done, _ in progress] == sorted({done for done, _ in progress})


def test_whole_image_pass_and_wrong_scale() -> None:
    calls: list[tuple[int, ...]] = []
    image = torch.rand(1, 3, 20, 30)
    run_tiled(lambda x: calls.append(tuple(x.shape)) or x, image, scale=1, tile=0, overlap=8)
    assert calls == [(1, 3, 20, 30)]
    with pytest.raises(ValueError, match="scale 2"):
        run_tiled(pointwise, image, scale=2, tile=16, overlap=4)


def test_pad_and_crop() -> None:
    image = torch.rand(1, 3, 5, 7)
    padded = pad_to_size(image, 8, 7)
    assert padded.shape == (1, 3, 8, 7)
    assert torch.equal(padded[..., 5:, :], image[..., 4:5, :].expand(1, 3, 3, 7))
    assert torch.equal(crop_to_size(padded, 5, 7), image)
    assert pad_to_size(image, 3, 3) is image


@pytest.mark.parametrize("border", [0, 8])
def test_tiles_stream_to_a_sink_once_each(border: int) -> None:
    """With a sink the output arrives as one block per tile, and together they cover the returned
    image exactly once: a large upscaled image never sits whole in float. A mirrored border's part
    of the output never reaches the sink."""
    image = torch.rand(1, 3, 70, 45)
    whole = run_tiled(blur3_x2, image, scale=2, tile=24, overlap=6, batch=2, border=border)
    assembled = torch.zeros_like(whole)
    cover = torch.zeros(whole.shape[-2:], dtype=torch.int64)

    def sink(top: int, left: int, block: torch.Tensor) -> None:
        rows, cols = slice(top, top + block.shape[-2]), slice(left, left + block.shape[-1])
        assembled[..., rows, cols] = block
        cover[rows, cols] += 1

    assert run_tiled(blur3_x2, image, scale=2, tile=24, overlap=6, batch=2, border=border, sink=sink) is None
    assert torch.equal(cover, torch.ones_like(cover))
    assert torch.equal(assembled, whole)


def zero_padded_blur(x: torch.Tensor) -> torch.Tensor:
    """A 3x3 box blur that pads with zeros, as convolutions do: it darkens the image's border."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True)


@pytest.mark.parametrize("height,width", [(40, 28), (5, 3), (1, 1)])
def test_a_mirrored_border_keeps_a_zero_padded_model_from_darkening_the_edge(height: int, width: int) -> None:
    flat = torch.full((1, 3, height, width), 0.5)
    darkened = run_tiled(zero_padded_blur, flat, scale=1, tile=0, overlap=0)
    assert darkened[..., 0, 0].max() < 0.5  # the corner averages in zeros
    assert torch.allclose(run_tiled(zero_padded_blur, flat, scale=1, tile=0, overlap=0, border=2), flat, atol=1e-6)


def test_a_mirrored_border_tiles_as_a_whole_image_pass() -> None:
    image = torch.rand(1, 3, 70, 45, generator=torch.Generator().manual_seed(7))
    grown = mirror_border(image, 8)
    assert grown.shape[-2:] == (86, 61) and torch.equal(grown[..., 8:-8, 8:-8], image)
    assert torch.equal(grown[..., 7, 8:-8], image[..., 1, :])  # mirrored, the edge row not repeated
    whole = run_tiled(blur3_x2, image, scale=2, tile=0, overlap=0, border=8)
    assert torch.equal(whole[..., 2:-2, 2:-2], blur3_x2(image)[..., 2:-2, 2:-2])  # inside, nothing changes
    assert torch.allclose(run_tiled(blur3_x2, image, scale=2, tile=24, overlap=6, batch=2, border=8), whole, atol=1e-6)


def test_tiler_allocates_no_image_sized_buffer() -> None:
    """Memory is bounded by the tile batch: with a sink, no tensor as large as half the output is
    ever allocated, whatever the scale."""
    image = torch.rand(1, 3, 96, 80)
    with largest_allocation() as largest:
        run_tiled(nearest_x4, image, scale=4, tile=32, overlap=8, batch=2, sink=lambda top, left, block: None)
    output_bytes = image.numel() * 4 * 4 * 4  # x4 in both directions, float32
    assert 0 < largest[0] < output_bytes / 2


@contextmanager
def largest_allocation() -> Iterator[list[int]]:
    """Records the largest storage any torch operation returns inside the block."""
    largest = [0]

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(tensor, torch.Tensor):
                    largest[0] = max(largest[0], tensor.untyped_storage().nbytes())
            return out

    with Spy():
        yield largest
