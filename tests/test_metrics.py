"""PSNR/SSIM must reproduce the numbers BasicSR/KAIR (and so the papers) report."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from adaptir_cli.metrics import psnr, rgb_to_y, ssim


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish uint8 image and a noisy copy, so SSIM lands well inside (0, 1)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, shape[1])[None, :] + np.linspace(0, 40, shape[0])[:, None]
    ramp = ramp[..., None] if len(shape) == 3 else ramp
    ref = np.clip(ramp + rng.normal(0, 20, shape), 0, 255).round().astype(np.uint8)
    img = np.clip(ref + rng.normal(0, 15, shape), 0, 255).round().astype(np.uint8)
    return img, ref


def test_identical_images_give_inf_psnr_and_ssim_one() -> None:
    img, _ = _pair((24, 20, 3))
    assert psnr(img, img) == math.inf
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert ssim(img, img, crop_border=2, test_y_channel=True) == pytest.approx(1.0, abs=1e-12)


def test_psnr_matches_hand_computation() -> None:
    ref = np.array([[0, 10], [20, 30]], dtype=np.uint8)
    img = np.array([[1, 10], [20, 27]], dtype=np.uint8)
    # MSE = (1 + 0 + 0 + 9) / 4 = 2.5 -> PSNR = 10 log10(255^2 / 2.5)
    assert psnr(img, ref) == pytest.approx(10 * math.log10(255**2 / 2.5), abs=1e-12)


def test_psnr_crop_border_ignores_the_border() -> None:
    ref = np.full((8, 8), 100, dtype=np.uint8)
    img = ref.copy()
    img[0, :] = 0  # damage only the border row
    assert psnr(img, ref, crop_border=1) == math.inf
    assert psnr(img, ref) < 30


def test_rgb_to_y_known_values() -> None:
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]], dtype=np.uint8)
    y = rgb_to_y(rgb)
    assert y[0, 0] == pytest.approx(235.0, abs=1e-9)
    assert y[0, 1] == pytest.approx(16.0, abs=1e-12)
    assert y[0, 2] == pytest.approx(16.0 + 65.481, abs=1e-9)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(np.zeros((16, 16)), np.zeros((16, 17)))


def test_ssim_needs_room_for_the_window() -> None:
    with pytest.raises(ValueError, match="larger than 10 px"):
        ssim(np.zeros((20, 20)), np.zeros((20, 20)), crop_border=5)


# skimage with gaussian_weights=True, sigma=1.5 uses the same 11 x 11 window (truncate 3.5 ->
# radius 5), population covariance and K1/K2 = 0.01/0.03; its mean skips `pad` = 5 pixels on
# every side, i.e. exactly the valid region BasicSR keeps. So the two scalars must agree,
# after applying the same crop (and Y conversion) to skimage's inputs.
def _skimage_ssim(img: np.ndarray, ref: np.ndarray, channel_axis: int | None) -> float:
    return float(
        structural_similarity(
            img.astype(np.float64),
            ref.astype(np.float64),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=channel_axis,
        )
    )


def _crop(shape: tuple[int, ...], border: int) -> tuple[slice, slice]:
    return slice(border, shape[0] - border), slice(border, shape[1] - border)


@pytest.mark.parametrize("crop_border", [0, 3])
def test_ssim_matches_skimage_gray(crop_border: int) -> None:
    img, ref = _pair((40, 33))
    crop = _crop(img.shape, crop_border)
    expected = _skimage_ssim(img[crop], ref[crop], None)
    assert 0.2 < expected < 0.99
    assert ssim(img, ref, crop_border=crop_border) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("crop_border", [0, 4])
def test_ssim_matches_skimage_rgb_mean_over_channels(crop_border: int) -> None:
    img, ref = _pair((37, 45, 3), seed=1)
    crop = _crop(img.shape, crop_border)
    expected = _skimage_ssim(img[crop], ref[crop], channel_axis=2)
    assert ssim(img, ref, crop_border=crop_border) == pytest.approx(expected, abs=1e-6)


def test_ssim_y_channel_matches_skimage_on_y() -> None:
    img, ref = _pair((36, 36, 3), seed=2)
    crop = _crop(img.shape, 2)
    expected = _skimage_ssim(rgb_to_y(img)[crop], rgb_to_y(ref)[crop], None)
    assert ssim(img, ref, crop_border=2, test_y_channel=True) == pytest.approx(expected, abs=1e-6)
