"""PSNR and SSIM exactly as BasicSR/KAIR compute them, so numbers compare with papers.

Inputs are uint8 (or integer-valued) RGB arrays of shape (H, W, 3) or (H, W); arithmetic is
float64; `crop_border` pixels are removed from every side; the Y channel is MATLAB's rgb2ycbcr.
"""

from __future__ import annotations

import cv2
import numpy as np

# SSIM constants of Wang et al. (2004) for a peak of 255, as BasicSR/KAIR use them.
_SSIM_C1 = (0.01 * 255.0) ** 2
_SSIM_C2 = (0.03 * 255.0) ** 2
# 11 x 11 Gaussian window, sigma 1.5: the outer product of the normalised 1-D kernel.
_SSIM_KERNEL_1D = cv2.getGaussianKernel(11, 1.5, ktype=cv2.CV_64F)
_SSIM_WINDOW = _SSIM_KERNEL_1D @ _SSIM_KERNEL_1D.T
_SSIM_MARGIN = 5  # half the window: statistics closer to the border than this are left out


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] pixels quantised as the protocol does before any metric: clip, round half up."""
    return np.floor(np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr luma on the 0..255 scale: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255."""
    rgb = image.astype(np.float64)
    return 16.0 + (rgb @ np.array([65.481, 128.553, 24.966])) / 255.0


def _prepare(image: np.ndarray, crop_border: int, test_y_channel: bool) -> np.ndarray:
    image = np.asarray(image)
    if test_y_channel and image.ndim == 3 and image.shape[2] == 3:
        image = rgb_to_y(image)
    image = image.astype(np.float64)
    if crop_border:
        image = image[crop_border:-crop_border, crop_border:-crop_border, ...]
    return image


def _check_shapes(img: np.ndarray, ref: np.ndarray) -> None:
    if img.shape != ref.shape:
        raise ValueError(f"image shapes differ: {img.shape} vs {ref.shape}")


def psnr(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, test_y_channel: bool = False) -> float:
    """Peak signal-to-noise ratio in dB (peak 255); identical images give inf."""
    _check_shapes(img, ref)
    a = _prepare(img, crop_border, test_y_channel)
    b = _prepare(ref, crop_border, test_y_channel)
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(255.0**2 / mse))


def _local_mean(channel: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local mean over the valid region only (no padded statistics)."""
    m = _SSIM_MARGIN
    return cv2.filter2D(channel, -1, _SSIM_WINDOW)[m:-m, m:-m]


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = _local_mean(a), _local_mean(b)
    var_a = _local_mean(a * a) - mu_a**2
    var_b = _local_mean(b * b) - mu_b**2
    cov = _local_mean(a * b) - mu_a * mu_b
    numerator = (2.0 * mu_a * mu_b + _SSIM_C1) * (2.0 * cov + _SSIM_C2)
    denominator = (mu_a**2 + mu_b**2 + _SSIM_C1) * (var_a + var_b + _SSIM_C2)
    return float(np.mean(numerator / denominator))


def ssim(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, test_y_channel: bool = False) -> float:
    """Structural similarity as BasicSR computes it: the mean SSIM map over the valid region,
    averaged over channels for RGB; identical images give 1."""
    _check_shapes(img, ref)
    a = _prepare(img, crop_border, test_y_channel)
    b = _prepare(ref, crop_border, test_y_channel)
    if min(a.shape[:2]) <= 2 * _SSIM_MARGIN:
        raise ValueError(
            f"SSIM needs images larger than {2 * _SSIM_MARGIN} px on each side after cropping "
            f"{crop_border} px, got {a.shape[:2]}"
        )
    if a.ndim == 2:
        return _ssim_channel(a, b)
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[2])]))
