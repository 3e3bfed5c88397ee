"""MATLAB-compatible bicubic: golden MATLAB files, interpolation properties, speed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adaptir_cli.imaging.resize import imresize, imresize_uint8, modcrop, resize_matrix

SET5 = ("baby", "bird", "butterfly", "head", "woman")


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_matches_matlab_lr_files(shared: Path, scale: int) -> None:
    golden = shared / "data" / "golden" / "Set5_bicubic"
    for name in SET5:
        hr = _read(golden / f"HR_x{scale}" / f"{name}.png")
        expected = _read(golden / f"LR_x{scale}" / f"{name}.png").astype(np.int16)
        lr = imresize_uint8(hr, 1 / scale).astype(np.int16)
        assert lr.shape == expected.shape, name
        difference = np.abs(lr - expected)
        assert difference.max() <= 1, name
        assert np.mean(difference == 0) >= 0.999, name


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_modcrop_gives_the_golden_hr(shared: Path, scale: int) -> None:
    data = shared / "data"
    for name in ("butterfly", "woman"):
        hr = modcrop(_read(data / "test" / "Set5" / f"{name}.png"), scale)
        np.testing.assert_array_equal(hr, _read(data / "golden" / "Set5_bicubic" / f"HR_x{scale}" / f"{name}.png"))


def test_modcrop_shapes() -> None:
    assert modcrop(np.zeros((7, 10, 3)), 3).shape == (6, 9, 3)
    assert modcrop(np.zeros((8, 8)), 4).shape == (8, 8)
    assert modcrop(np.zeros((5, 6)), 1).shape == (5, 6)


@pytest.mark.parametrize("scale", [4, 3, 2, 1.5, 0.5, 1 / 3, 0.25, 0.37])
def test_constant_image_stays_constant(scale: float) -> None:
    image = np.full((13, 11, 3), 0.7)
    out = imresize(image, scale)
    np.testing.assert_allclose(out, 0.7, atol=1e-12)


@pytest.mark.parametrize(
    ("shape", "scale", "size", "expected"),
    [
        ((5, 7, 3), 2, None, (10, 14, 3)),
        ((5, 7), 3, None, (15, 21)),
        ((10, 10), 1 / 3, None, (4, 4)),  # MATLAB: ceil(10 / 3)
        ((10, 12, 2), None, (9, 4), (9, 4, 2)),
        ((6, 6), None, (6, 24), (6, 24)),
    ],
)
def test_output_shapes(
    shape: tuple[int, ...], scale: float | None, size: tuple[int, int] | None, expected: tuple[int, ...]
) -> None:
    assert imresize(np.zeros(shape), scale=scale, size=size).shape == expected


def test_scale_one_is_identity() -> None:
    image = np.random.default_rng(0).random((9, 8, 3))
    np.testing.assert_allclose(imresize(image, 1), image, atol=1e-12)


def test_upscaling_reproduces_a_linear_ramp_away_from_the_border() -> None:
    # Cubic convolution with a = -0.5 reproduces polynomials up to degree 2; mirroring only
    # affects the two outermost input pixels, so the interior must be the exact ramp.
    ramp = np.arange(20, dtype=np.float64)[:, None] * np.ones((1, 4))
    out = imresize(ramp, size=(40, 4))
    centres = (np.arange(40) + 0.5) / 2 - 0.5  # where each output pixel samples the input
    interior = slice(6, 34)
    np.testing.assert_allclose(out[interior, 0], centres[interior], atol=1e-12)


@pytest.mark.parametrize(("n_in", "n_out"), [(16, 4), (15, 5), (7, 21), (10, 13), (13, 10)])
def test_resize_matrix_rows_sum_to_one(n_in: int, n_out: int) -> None:
    matrix = resize_matrix(n_in, n_out, n_out / n_in)
    assert matrix.shape == (n_out, n_in)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)


def test_uint8_helper_rounds_and_saturates() -> None:
    # A hard edge overshoots below 0 and above 255 in bicubic: the uint8 result must clip.
    edge = np.zeros((8, 8), dtype=np.uint8)
    edge[:, 4:] = 255
    floats = imresize(edge, 2)
    assert floats.min() < 0 and floats.max() > 255
    out = imresize_uint8(edge, 2)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.floor(np.clip(floats, 0, 255) + 0.5))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        imresize(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="exactly one"):
        imresize(np.zeros((4, 4)), scale=2, size=(8, 8))
    with pytest.raises(ValueError, match="uint8"):
        imresize_uint8(np.zeros((4, 4)), 2)
    with pytest.raises(ValueError, match="H x W"):
        imresize(np.zeros(4), 2)


def test_fast_enough_for_real_images() -> None:
    # Per-pixel Python loops would take minutes here; per-axis weight matrices take well under a second.
    image = np.random.default_rng(0).random((768, 768, 3))
    start = time.perf_counter()
    small = imresize(image, 1 / 4)
    imresize(small, 4)
    assert time.perf_counter() - start < 5.0
