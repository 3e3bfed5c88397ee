"""MATLAB-compatible bicubic resizing, the one every super-resolution benchmark is built with.

Published SR numbers use low-resolution images made by MATLAB's `imresize(hr, 1/s, 'bicubic')`.
PIL and OpenCV resize differently (no antialiasing when down-scaling, other boundary rules), and
the difference moves PSNR by tenths of a dB, so benchmark LR images must come from here.

What MATLAB does, restated: the cubic convolution kernel with a = -0.5; when down-scaling the
kernel is stretched by 1/scale (antialiasing); output pixel x (1-based) samples the input at
u = x / scale + (1 - 1 / scale) / 2; taps outside the image are mirrored (edge pixel repeated);
each output row of weights is normalised to sum to 1; the two axes are resized one after the
other, the axis with the smaller scale first.
"""

from __future__ import annotations

import math

import numpy as np

# Support of the cubic kernel in input pixels (it is zero beyond |x| = 2).
_CUBIC_WIDTH = 4.0


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1.0)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1.0) & (ax <= 2.0))
    return near + far


def _mirror(indices: np.ndarray, length: int) -> np.ndarray:
    """Fold out-of-range indices back as MATLAB does: ..., 1, 0, 0, 1, ..., n-1, n-1, n-2, ..."""
    period = np.mod(indices, 2 * length)
    return np.where(period < length, period, 2 * length - 1 - period)


def resize_matrix(in_length: int, out_length: int, scale: float) -> np.ndarray:
    """The (out_length, in_length) matrix that resizes one axis like MATLAB's imresize.

    Built from MATLAB's per-output contributions (a few taps each); mirrored taps that land on
    the same input pixel add up, which is what MATLAB's gather-and-sum computes.
    """
    # Antialiasing: when down-scaling, the kernel is stretched by 1/scale (and scaled to keep
    # unit area) so it low-pass filters before decimation; up-scaling uses the plain kernel.
    stretch = min(scale, 1.0)
    width = _CUBIC_WIDTH / stretch
    # 0-based form of MATLAB's u = x / scale + 0.5 * (1 - 1 / scale) with 1-based x and u.
    centre = (np.arange(out_length, dtype=np.float64) + 0.5) / scale - 0.5
    left = np.floor(centre - width / 2.0).astype(np.int64)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    weights = stretch * _cubic(stretch * (centre[:, None] - indices))
    weights /= weights.sum(axis=1, keepdims=True)
    matrix = np.zeros((out_length, in_length), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_length)[:, None], indices.shape)
    np.add.at(matrix, (rows, _mirror(indices, in_length)), weights)
    return matrix


def _target(
    shape: tuple[int, int], scale: float | None, size: tuple[int, int] | None
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Output size and per-axis scale from exactly one of `scale` or `size`, as MATLAB derives them."""
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale (e.g. 0.25) or size (height, width)")
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        out = (math.ceil(shape[0] * scale), math.ceil(shape[1] * scale))
        return out, (float(scale), float(scale))
    assert size is not None
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (height, width) with both >= 1, got {size}")
    return (int(size[0]), int(size[1])), (size[0] / shape[0], size[1] / shape[1])


def imresize(image: np.ndarray, scale: float | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """Resize an H x W or H x W x C image like MATLAB's `imresize(..., 'bicubic')`.

    Give `scale` (output size is ceil(input * scale)) or `size` = (height, width). Arithmetic is
    float64 and values are not clipped: bicubic overshoots near edges, as in MATLAB.
    """
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an H x W or H x W x C image, got shape {image.shape}")
    out_shape, scales = _target(image.shape[:2], scale, size)
    result = image.astype(np.float64)
    # MATLAB resizes the axis with the smaller scale first (stable: height first on a tie).
    for axis in sorted((0, 1), key=lambda a: scales[a]):
        matrix = resize_matrix(result.shape[axis], out_shape[axis], scales[axis])
        result = np.moveaxis(np.tensordot(matrix, result, axes=(1, axis)), 0, axis)
    return result


def imresize_uint8(image: np.ndarray, scale: float | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """`imresize` of a uint8 image back to uint8, as MATLAB makes benchmark LR files.

    Both axes are resized in float64 and the result is rounded once, halves away from zero
    (numpy's round-half-to-even differs on the exact .5 values that dyadic cubic weights
    produce), then saturated to 0..255. This matches MATLAB's Set5 LR files on >= 99.9 % of
    pixels; the rest are exact .5 ties that MATLAB's own rounding error tips either way.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"imresize_uint8 takes a uint8 image, got {image.dtype}; use imresize for floats")
    resized = imresize(image, scale, size)
    return np.floor(np.clip(resized, 0.0, 255.0) + 0.5).astype(np.uint8)


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop height and width down to multiples of `scale` (from the bottom/right), as SR protocols do."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    height, width = image.shape[:2]
    return image[: height - height % scale, : width - width % scale, ...]
