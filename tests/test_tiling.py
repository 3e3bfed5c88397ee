"""Tiling, padding and blending: a tiled run must reproduce the whole-image run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adaptir_cli.imaging.tiling import (
    Tile,
    blend_window,
    crop_to_size,
    pad_to_size,
    plan_tiles,
    run_tiled,
)


def pointwise(x: torch.Tensor) -> torch.Tensor:
    """Mixes channels per pixel, non-linearly: tiling must not change a single value."""
    mix = torch.tensor([[0.5, 0.3, 0.2], [-0.1, 0.9, 0.2], [0.3, -0.4, 1.1]])
    return torch.sigmoid(torch.einsum("oc,nchw->nohw", mix, x) * 3.0)


def nearest_x4(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=4, mode="nearest") * 0.7 + 0.1


def blur3(x: torch.Tensor) -> torch.Tensor:
    """3x3 box blur, receptive field radius 1: only tile edges see something different."""
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


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


def test_every_pixel_covered_and_weights_never_zero() -> None:
    for height, width, tile, overlap in ((37, 53, 16, 5), (100, 20, 24, 23), (48, 48, 16, 0)):
        tiles = plan_tiles(height, width, tile, overlap)
        weight = torch.zeros(height, width)
        for box in tiles:
            assert 0 <= box.top < box.bottom <= height and 0 <= box.left < box.right <= width
            window = blend_window(
                box.height, box.width, overlap,
                top=box.top > 0, bottom=box.bottom < height, left=box.left > 0, right=box.right < width,
            )
            assert window.min() > 0
            weight[box.region()] += window
        assert weight.min() > 0
    ones = run_tiled(lambda x: torch.ones_like(x), torch.rand(1, 3, 37, 53), scale=1, tile=16, overlap=5, batch=2)
    assert torch.equal(ones, torch.ones(1, 3, 37, 53))


def test_plan_overlaps_and_border_alignment() -> None:
    tiles = plan_tiles(50, 30, 20, 6)
    rows = sorted({box.top for box in tiles})
    cols = sorted({box.left for box in tiles})
    assert rows == [0, 14, 28, 30] and cols == [0, 10]
    assert all(box.height == 20 and box.width == 20 for box in tiles)
    assert plan_tiles(10, 12, 64, 8) == [Tile(0, 0, 10, 12)]
    # Rounded down to the model's multiple: 30 -> 24.
    assert {box.height for box in plan_tiles(100, 100, 30, 4, multiple=8)} == {24}
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(100, 100, 16, 16)


def test_blend_window_edges() -> None:
    inner = blend_window(12, 14, 4, top=True, bottom=True, left=True, right=True)
    assert 0 < inner.min() < 0.1 and inner.max() == 1
    border = blend_window(8, 10, 4, top=False, bottom=False, left=False, right=False)
    assert torch.equal(border, torch.ones(8, 10))
    # Facing ramps over the same pixels form a partition of unity.
    falling = blend_window(1, 4, 4, top=False, bottom=False, left=False, right=True)
    rising = blend_window(1, 4, 4, top=False, bottom=False, left=True, right=False)
    assert torch.allclose(falling + rising, torch.ones(1, 4))


def test_smooth_model_shows_no_seam() -> None:
    image = torch.rand(1, 3, 70, 90)
    whole = blur3(image)
    blended = run_tiled(blur3, image, scale=1, tile=32, overlap=16, batch=4)
    assert (blended - whole).abs().max() < 0.5 / 255
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


def test_rows_stream_to_a_sink_in_order() -> None:
    """With a sink the output arrives as finished blocks of rows, one per row of tiles, and
    together they equal the returned image: a large upscaled image never sits whole in float."""
    image = torch.rand(1, 3, 70, 45)
    blur = lambda x: torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False).repeat_interleave(2, -1).repeat_interleave(2, -2)  # noqa: E731
    whole = run_tiled(blur, image, scale=2, tile=24, overlap=6, batch=2)
    blocks: list[tuple[int, torch.Tensor]] = []
    assert run_tiled(blur, image, scale=2, tile=24, overlap=6, batch=2, sink=lambda r, rows: blocks.append((r, rows.clone()))) is None
    starts = [r for r, _ in blocks]
    assert starts == sorted(starts) and starts[0] == 0
    assert len(blocks) == len({t.top for t in plan_tiles(70, 45, 24, 6)})
    assert torch.equal(torch.cat([rows for _, rows in blocks], dim=-2), whole)
