"""The degradations that turn clean images into the inputs of each task.

Images are float32 H x W x 3 RGB in [0, 1]. Each op is a deterministic function of the image,
its parameters and a numpy Generator (for the noise it draws), so a seed reproduces an input
exactly. Where a task varies its parameters (how much rain, how dark), a separate sampler draws
them from documented ranges: the op can then be replayed or tested with fixed parameters, and
no global random state is involved (the BasicSR lesson).

The benchmark protocol (METHOD.md section 6) fixes the standard ones: Gaussian noise added in
float and clipped, not quantised; JPEG through OpenCV's encoder; LR images from MATLAB-compatible
bicubic on mod-cropped images. Rain and low light have no training data here, so they are
synthesised; numbers trained on them must say so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from adaptir_cli.imaging.resize import imresize_uint8, modcrop
from adaptir_cli.metrics import to_uint8
from adaptir_cli.tasks import UnknownTaskError

# Parameter name -> (low, high) of the uniform range a sampler draws it from.
ParamRanges = Mapping[str, tuple[float, float]]


def sample_params(rng: np.random.Generator, ranges: ParamRanges) -> dict[str, float]:
    """Draw every parameter uniformly from its range (in the mapping's order, so seeds replay)."""
    return {name: float(rng.uniform(low, high)) for name, (low, high) in ranges.items()}


def _to_float(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) / np.float32(255.0)


def add_gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise of std `sigma` on the 0..255 scale; clipped to [0, 1], not quantised."""
    noise = rng.standard_normal(img.shape) * (sigma / 255.0)
    return np.clip(img + noise, 0.0, 1.0).astype(np.float32)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Compress and decompress with OpenCV's JPEG codec at `quality` (1..100), as the paper does."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"jpeg expects an H x W x 3 RGB image, got shape {img.shape}")
    bgr = cv2.cvtColor(to_uint8(img), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode the image as JPEG")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return _to_float(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))


def bicubic_down(img: np.ndarray, scale: int) -> np.ndarray:
    """The benchmark LR image: mod-crop, then MATLAB bicubic down-scaling by `scale`.

    The image is treated as 8-bit and the LR is quantised to 8 bits, because benchmark LR files
    are MATLAB's uint8 output: this reproduces them rather than a float approximation.
    """
    return _to_float(imresize_uint8(to_uint8(modcrop(img, scale)), 1.0 / scale))


def lr4_noise30(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The paper's hybrid: x4 bicubic LR, then Gaussian noise sigma 30 on the LR."""
    return add_gaussian_noise(bicubic_down(img, 4), 30.0, rng)


def lr4_jpeg30(img: np.ndarray) -> np.ndarray:
    """The paper's hybrid: x4 bicubic LR, then JPEG quality 30 on the LR."""
    return jpeg(bicubic_down(img, 4), 30)


# Synthetic rain. Not a model of Rain100L/H's rendering: sparse seeds smeared into streaks.
# density: fraction of pixels that start a streak; length and width (full width at half
# maximum) in pixels; angle in degrees from vertical, positive leaning the bottom of a streak
# to the right; brightness: the brightest streak's value before screen blending.
# "light" is calibrated on 20 Rain100L test pairs (rain = input - target): real rain adds 0.021
# on average, 20 % of the pixels gain > 0.02 and the inputs score 25.8 dB RGB; this preset gives
# 0.021, 19 % and 25.1 dB on the same backgrounds (the first presets, 4x sparser, gave 0.005,
# 4 % and 30.2 dB: a base trained on them learned nothing that transfers). It matches the amount
# but not the shape: its streaks are near vertical and thin, while Rain100L's lean -21 / +21
# degrees (5th / 95th percentile over images) and are 2.45 px wide (all 100 pairs, Y residual,
# `experiments/default/rain_shape.py`). A derain adapter transfers best when trained on rain more
# varied and stronger than the test set's, not matched to it (docs/training.md: 29.10 dB on
# Rain100L with "varied", 28.31 with a preset matched to Rain100L): "varied" draws angles to +-35
# degrees and widths to 3.5 px, for inputs of about 21.6 dB on those backgrounds. "light" stays
# what `derain` means, because the CompactIR bases were pre-trained on it and must stay
# reproducible. "heavy" aims at Rain100H's inputs, about 13.5 dB, which are not here to measure:
# about 14 dB on those backgrounds.
RAIN_PRESETS: dict[str, ParamRanges] = {
    "light": {
        "density": (0.002, 0.006),
        "length": (15.0, 40.0),
        "angle": (-10.0, 10.0),
        "width": (0.8, 1.5),
        "brightness": (0.25, 0.5),
    },
    "varied": {
        "density": (0.0015, 0.008),
        "length": (10.0, 50.0),
        "angle": (-35.0, 35.0),
        "width": (1.0, 3.5),
        "brightness": (0.2, 0.85),
    },
    "heavy": {
        "density": (0.003, 0.008),
        "length": (20.0, 45.0),
        "angle": (-30.0, 30.0),
        "width": (1.5, 3.0),
        "brightness": (0.5, 0.85),
    },
}


def _streak_kernel(length: float, angle: float, width: float) -> np.ndarray:
    """An antialiased line segment with a Gaussian cross-section and a peak of 1."""
    sigma = max(width, 0.1) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    radius = math.ceil(length / 2.0 + 3.0 * sigma)
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float32)
    theta = math.radians(angle)
    along = y * math.cos(theta) + x * math.sin(theta)
    across = x * math.cos(theta) - y * math.sin(theta)
    # Soft (one-pixel) end caps avoid jagged streak ends.
    ends = np.clip(length / 2.0 + 0.5 - np.abs(along), 0.0, 1.0)
    return (np.exp(-(across**2) / (2.0 * sigma**2)) * ends).astype(np.float32)


def add_rain(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    density: float,
    length: float,
    angle: float,
    width: float,
    brightness: float,
) -> np.ndarray:
    """Overlay bright rain streaks: sparse random seeds, motion-blurred along `angle`, screen-blended.

    Screen blending (1 - (1 - image) (1 - rain)) only brightens, as light scattered by drops does.
    Seeds are drawn on a canvas larger than the image so streaks also enter from outside it.
    """
    kernel = _streak_kernel(length, angle, width)
    pad = kernel.shape[0] // 2
    height, width_px = img.shape[:2]
    canvas = (height + 2 * pad, width_px + 2 * pad)
    seeds = (rng.random(canvas) < density) * rng.uniform(0.5, 1.0, canvas) * brightness
    streaks = cv2.filter2D(seeds.astype(np.float32), -1, kernel)[pad : pad + height, pad : pad + width_px]
    rain = np.clip(streaks, 0.0, 1.0)[..., None]
    return (1.0 - (1.0 - img) * (1.0 - rain)).astype(np.float32)


# Low light: exposure * image ** gamma, then Poisson-Gaussian sensor noise approximated as
# Gaussian with variance shot_noise * signal + read_noise ** 2 (signal-dependent). With these
# ranges a mid-grey 0.45 ends near 0.014 to 0.13 before noise.
LOWLIGHT_RANGES: ParamRanges = {
    "exposure": (0.08, 0.35),
    "gamma": (1.2, 2.2),
    "shot_noise": (1e-4, 3e-3),
    "read_noise": (0.002, 0.012),
}


def darken(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    exposure: float,
    gamma: float,
    shot_noise: float,
    read_noise: float,
) -> np.ndarray:
    """Simulate an under-exposed shot: scale and gamma-darken, then add signal-dependent noise."""
    dark = exposure * np.power(img.astype(np.float64), gamma)
    std = np.sqrt(shot_noise * dark + read_noise**2)
    return np.clip(dark + std * rng.standard_normal(img.shape), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Degradation:
    """How a task's input is made from a clean image; `scale` is the HR/LR size ratio."""

    name: str
    scale: int
    description: str
    apply: Callable[[np.ndarray, np.random.Generator], np.ndarray]

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(img, rng)


def _noise(sigma: int) -> Degradation:
    return Degradation(
        f"denoise{sigma}", 1, f"Gaussian noise sigma {sigma} (0..255 scale), clipped, not quantised",
        lambda img, rng: add_gaussian_noise(img, sigma, rng),
    )


def _sr(scale: int) -> Degradation:
    return Degradation(
        f"sr{scale}", scale, f"x{scale} MATLAB bicubic down-sampling of the mod-cropped image",
        lambda img, rng: bicubic_down(img, scale),
    )


def _jpeg(quality: int) -> Degradation:
    return Degradation(
        f"jpeg{quality}", 1, f"JPEG compression at quality {quality} (OpenCV)",
        lambda img, rng: jpeg(img, quality),
    )


def _rain(name: str, preset: str) -> Degradation:
    return Degradation(
        name, 1, f"synthetic {preset} rain streaks, parameters drawn from RAIN_PRESETS[{preset!r}]",
        lambda img, rng: add_rain(img, rng, **sample_params(rng, RAIN_PRESETS[preset])),
    )


DEGRADATIONS: dict[str, Degradation] = {
    degradation.name: degradation
    for degradation in (
        *(_noise(sigma) for sigma in (15, 25, 30, 50)),
        *(_sr(scale) for scale in (2, 3, 4)),
        Degradation("lr4-noise30", 4, "x4 bicubic, then Gaussian noise sigma 30 on the LR", lr4_noise30),
        Degradation(
            "lr4-jpeg30", 4, "x4 bicubic, then JPEG quality 30 on the LR", lambda img, rng: lr4_jpeg30(img)
        ),
        _rain("derain", "light"),
        _rain("derain-varied", "varied"),
        _rain("derain-heavy", "heavy"),
        Degradation(
            "lowlight", 1, "synthetic low light: darkening, gamma and signal-dependent noise (LOWLIGHT_RANGES)",
            lambda img, rng: darken(img, rng, **sample_params(rng, LOWLIGHT_RANGES)),
        ),
        *(_jpeg(quality) for quality in (10, 20, 30, 40)),
    )
}


# Blind denoising (IPT-style pre-training of one head for every level): sigma drawn per sample.
# A training degradation only: benchmarks fix the level, so it is not in DEGRADATIONS.
BLIND_DENOISE = "denoise"
BLIND_SIGMA = (0.0, 55.0)


def blind_denoise() -> Degradation:
    low, high = BLIND_SIGMA
    return Degradation(
        BLIND_DENOISE, 1, f"Gaussian noise, sigma uniform in [{low:g}, {high:g}] per sample (0..255 scale)",
        lambda img, rng: add_gaussian_noise(img, float(rng.uniform(low, high)), rng),
    )


def get_degradation(name: str) -> Degradation:
    """The degradation for task `name`, or an error listing the known ones."""
    try:
        return DEGRADATIONS[name]
    except KeyError:
        raise UnknownTaskError(f"no degradation for task {name!r}; known: {', '.join(DEGRADATIONS)}") from None
