"""Degradations: seeded determinism, the protocol's noise/JPEG/bicubic, synthetic rain and low light."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from adaptir_cli.data.degradations import (
    DEGRADATIONS,
    LOWLIGHT_RANGES,
    RAIN_PRESETS,
    add_gaussian_noise,
    add_rain,
    bicubic_down,
    darken,
    get_degradation,
    jpeg,
    lr4_jpeg30,
    lr4_noise30,
    sample_params,
)
from adaptir_cli.tasks import TASKS, UnknownTaskError

RANDOM = {
    "denoise15", "denoise25", "denoise30", "denoise50", "lr4-noise30", "derain", "derain-varied", "derain-heavy", "lowlight",
}


def _image(height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """A textured float32 RGB image on the 8-bit grid, like one read from a PNG."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.1, 0.9, width)[None, :, None] * np.ones((height, 1, 3))
    pixels = np.clip(ramp + rng.normal(0, 0.1, (height, width, 3)), 0, 1)
    return (np.round(pixels * 255) / 255).astype(np.float32)


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_every_degradation_is_seeded_and_well_formed(name: str) -> None:
    degradation = DEGRADATIONS[name]
    img = _image()
    first = degradation(img, np.random.default_rng(7))
    again = degradation(img, np.random.default_rng(7))
    other = degradation(img, np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert (not np.array_equal(first, other)) == (name in RANDOM)
    assert degradation.name == name and degradation.description
    assert first.dtype == np.float32
    assert first.shape == (64 // degradation.scale, 64 // degradation.scale, 3)
    assert first.min() >= 0.0 and first.max() <= 1.0
    np.testing.assert_array_equal(img, _image())  # the input is never modified in place


def test_registry_scales_agree_with_tasks() -> None:
    shared_names = set(DEGRADATIONS) & set(TASKS)
    assert {"sr2", "sr3", "sr4", "lr4-noise30", "lr4-jpeg30", "derain", "derain-heavy", "lowlight"} <= shared_names
    for name in shared_names:
        assert DEGRADATIONS[name].scale == TASKS[name].scale, name


def test_unknown_degradation_lists_the_known_ones() -> None:
    assert get_degradation("sr4") is DEGRADATIONS["sr4"]
    with pytest.raises(UnknownTaskError, match="known: denoise15"):
        get_degradation("sr5")


def test_gaussian_noise_has_the_requested_std_and_is_not_quantised() -> None:
    img = np.full((128, 128, 3), 0.5, dtype=np.float32)  # 8.5 sigma from both bounds: no clipping
    noise = add_gaussian_noise(img, 15, np.random.default_rng(0)).astype(np.float64) - 0.5
    assert noise.std() == pytest.approx(15 / 255, rel=0.03)
    assert abs(noise.mean()) < 0.002
    assert not np.allclose(noise * 255, np.round(noise * 255), atol=1e-3)


def test_gaussian_noise_is_clipped_to_the_unit_range() -> None:
    img = np.zeros((32, 32, 3), dtype=np.float32)
    img[:, 16:] = 1.0
    out = add_gaussian_noise(img, 50, np.random.default_rng(0))
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.mean(out[:, :16] == 0.0) > 0.4 and np.mean(out[:, 16:] == 1.0) > 0.4


def test_jpeg_keeps_a_flat_image_flat_and_quality_orders_the_error() -> None:
    flat = np.full((32, 48, 3), 128 / 255, dtype=np.float32)
    assert np.abs(jpeg(flat, 10) - flat).max() <= 1 / 255 + 1e-6
    img = _image()
    error = {q: float(np.abs(jpeg(img, q) - img).mean()) for q in (10, 40, 95)}
    assert error[10] > error[40] > error[95] > 0


def test_jpeg_refuses_bad_quality_and_non_rgb() -> None:
    with pytest.raises(ValueError, match="1..100"):
        jpeg(_image(), 0)
    with pytest.raises(ValueError, match="RGB"):
        jpeg(np.zeros((8, 8), dtype=np.float32), 30)


@pytest.mark.parametrize(
    ("shape", "scale", "expected"), [((64, 64), 4, (16, 16)), ((66, 70), 4, (16, 17)), ((64, 64), 3, (21, 21))]
)
def test_bicubic_down_mod_crops_then_down_scales(
    shape: tuple[int, int], scale: int, expected: tuple[int, int]
) -> None:
    assert bicubic_down(_image(*shape), scale).shape == (*expected, 3)


def test_hybrids_are_x4_then_noise_or_jpeg() -> None:
    img = _image(64, 64)
    lr = bicubic_down(img, 4)
    noisy = lr4_noise30(img, np.random.default_rng(3))
    np.testing.assert_array_equal(noisy, add_gaussian_noise(lr, 30, np.random.default_rng(3)))
    np.testing.assert_array_equal(lr4_jpeg30(img), jpeg(lr, 30))
    assert noisy.shape == lr.shape == (16, 16, 3)


def test_bicubic_down_reproduces_the_matlab_lr_file(shared: Path) -> None:
    golden = shared / "data" / "golden" / "Set5_bicubic"
    hr = np.asarray(Image.open(golden / "HR_x4" / "butterfly.png").convert("RGB")).astype(np.float32) / 255
    expected = np.asarray(Image.open(golden / "LR_x4" / "butterfly.png").convert("RGB"))
    lr = np.round(bicubic_down(hr, 4) * 255).astype(np.int16)
    assert np.abs(lr - expected).max() <= 1 and np.mean(lr == expected) >= 0.999


def test_sample_params_stays_in_range_and_replays() -> None:
    for ranges in (*RAIN_PRESETS.values(), LOWLIGHT_RANGES):
        params = sample_params(np.random.default_rng(5), ranges)
        assert params == sample_params(np.random.default_rng(5), ranges)
        for name, (low, high) in ranges.items():
            assert low <= params[name] <= high


def _streak_orientation(layer: np.ndarray) -> tuple[float, float]:
    """Dominant streak angle (degrees from vertical, bottom to the right positive) and coherence.

    The gradient structure tensor's weakest direction is the one along which intensity varies
    least: along the streaks. Coherence 1 means perfectly oriented, 0 means isotropic. A light
    blur first: finite differences of one-pixel-thin lines alias and bias the angle by ~10 deg.
    """
    gy, gx = np.gradient(cv2.GaussianBlur(layer.astype(np.float64), (0, 0), 1.5))
    tensor = np.array([[np.sum(gy * gy), np.sum(gy * gx)], [np.sum(gy * gx), np.sum(gx * gx)]])
    values, vectors = np.linalg.eigh(tensor)
    dy, dx = vectors[:, 0]
    angle = math.degrees(math.atan2(dx, dy))
    angle = (angle + 90.0) % 180.0 - 90.0
    return angle, (values[1] - values[0]) / (values[1] + values[0])


@pytest.mark.parametrize("angle", [-25.0, 0.0, 20.0, 35.0])
def test_rain_streaks_follow_the_requested_angle(angle: float) -> None:
    black = np.zeros((96, 96, 3), dtype=np.float32)
    rain = add_rain(black, np.random.default_rng(0), density=0.003, length=20, angle=angle, width=1.2, brightness=0.8)
    measured, coherence = _streak_orientation(rain[..., 0])
    assert measured == pytest.approx(angle, abs=4.0)
    assert coherence > 0.5
    np.testing.assert_array_equal(rain[..., 0], rain[..., 2])  # rain is colourless


def test_rain_only_brightens_and_heavy_adds_more_than_light() -> None:
    img = _image(96, 96)
    added = {}
    for task in ("derain", "derain-heavy"):
        outs = [DEGRADATIONS[task](img, np.random.default_rng(seed)) for seed in range(3)]
        for out in outs:
            assert np.all(out >= img - 1e-6)
        added[task] = float(np.mean([out.mean() - img.mean() for out in outs]))
    assert 0 < added["derain"] < added["derain-heavy"]


def test_varied_rain_leans_further_than_light_and_adds_less_than_heavy() -> None:
    """derain-varied spreads streak angles to +-35 degrees (light rain stays near vertical) and
    its amount lies between light and heavy rain."""
    black = np.zeros((128, 128, 3), dtype=np.float32)
    lean, added = {}, {}
    for name in ("derain", "derain-varied", "derain-heavy"):
        layers = [DEGRADATIONS[name](black, np.random.default_rng(seed))[..., 0] for seed in range(40)]
        lean[name] = np.percentile([abs(_streak_orientation(layer)[0]) for layer in layers], 90)
        added[name] = np.mean(layers)
    assert lean["derain"] < 12 < 24 < lean["derain-varied"]
    assert added["derain"] < added["derain-varied"] < added["derain-heavy"]


def test_darken_lowers_the_mean() -> None:
    img = _image()
    out = DEGRADATIONS["lowlight"](img, np.random.default_rng(0))
    assert out.mean() < 0.5 * img.mean()


def test_darken_noise_grows_with_the_signal() -> None:
    img = np.full((64, 64, 3), 0.1, dtype=np.float32)
    img[:, 32:] = 0.5  # both levels >= 3 noise stds from the bounds, so clipping is negligible
    out = darken(img, np.random.default_rng(0), exposure=1.0, gamma=1.0, shot_noise=0.01, read_noise=0.001)
    # Variance = shot_noise * signal + read_noise^2: the brighter half is noisier by ~sqrt(5).
    for half, level in ((out[:, :32], 0.1), (out[:, 32:], 0.5)):
        assert half.mean() == pytest.approx(level, abs=0.005)
        assert half.std() == pytest.approx(math.sqrt(0.01 * level + 0.001**2), rel=0.05)
