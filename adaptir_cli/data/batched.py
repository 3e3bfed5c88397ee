"""The training degradations on whole batches in torch, drawing from the same per-sample streams.

`degradations.py` holds the reference ops on one numpy image (what benchmarks and validation
use). Training degrades a batch of crops per step, and there the numpy ops cost more than their
arithmetic: MATLAB bicubic is a float64 tensordot that OpenBLAS spreads over threads busy-waiting
against torch's own, so a step that computes for 50 ms took 190 ms (and 2.4 s when the samples
were built in the training thread). Here the arithmetic runs on the whole (N, 3, H, W) batch in
torch, in the training thread; only what must be drawn per sample is drawn per sample, from that
sample's own numpy Generator and in the reference op's order, so a seed still fixes every sample
(noise and rain are the reference's draws; bicubic agrees with it up to rounding ties).

A batch function takes clean crops float32 in [0, 1], (N, 3, H, W), the samples' Generators and
which samples are grey (a grey sample gets noise that is the same in its three channels, the
noise of a grey photograph), and returns the degraded batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import cv2
import numpy as np
import torch

from adaptir_cli.data.degradations import (
    BLIND_DENOISE,
    BLIND_SIGMA,
    LOWLIGHT_RANGES,
    RAIN_PRESETS,
    Degradation,
    _streak_kernel,
    jpeg,
    sample_params,
)
from adaptir_cli.imaging.resize import resize_matrix

BatchApply = Callable[[torch.Tensor, Sequence[np.random.Generator], Sequence[bool]], torch.Tensor]


def quantise(batch: torch.Tensor) -> torch.Tensor:
    """Float [0, 1] -> the integer levels 0..255 (exact in float32), rounding half up like `to_uint8`."""
    return torch.floor(batch.clamp(0.0, 1.0) * 255.0 + 0.5)


@lru_cache(maxsize=32)
def _down_matrix(length: int, scale: int) -> torch.Tensor:
    return torch.from_numpy(resize_matrix(length, length // scale, 1.0 / scale)).float()


def bicubic_down(batch: torch.Tensor, scale: int) -> torch.Tensor:
    """`degradations.bicubic_down` of every crop: 8-bit in, MATLAB bicubic, 8-bit LR out.

    The crops' sides must be multiples of `scale` (training cuts them so). The two axes are one
    matrix product each, in float32 (the reference uses float64): the levels differ by about 1e-5,
    so a value within that of a .5 tie may round the other way (about 1 pixel in 10,000, by one level).
    """
    height, width = batch.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"crops of {height}x{width} px are not multiples of the scale {scale}")
    rows, cols = _down_matrix(height, scale), _down_matrix(width, scale)
    resized = rows @ quantise(batch.float()) @ cols.T
    return torch.floor(resized.clamp(0.0, 255.0) + 0.5) / 255.0


def _noise(rng: np.random.Generator, shape: tuple[int, ...], grey: bool) -> np.ndarray:
    """One sample's standard normal draws, HWC as the reference draws them; one channel if grey."""
    height, width, channels = shape
    return rng.standard_normal((height, width, 1) if grey else (height, width, channels))


def _chw(draws: Sequence[np.ndarray]) -> torch.Tensor:
    """Per-sample HWC arrays (1 or 3 channels, broadcast) -> an (N, C, H, W) float64 tensor."""
    return torch.from_numpy(np.stack([np.broadcast_to(d, draws[0].shape[:2] + (3,)) for d in draws])).permute(0, 3, 1, 2)


def add_noise(batch: torch.Tensor, sigmas: Sequence[float], rngs: Sequence[np.random.Generator], grey: Sequence[bool]) -> torch.Tensor:
    """Gaussian noise of std `sigmas[i]` (0..255 scale) on sample i, clipped and not quantised."""
    shape = (batch.shape[2], batch.shape[3], batch.shape[1])
    noise = _chw([_noise(rng, shape, g) * (sigma / 255.0) for rng, sigma, g in zip(rngs, sigmas, grey)])
    return (batch.double() + noise).clamp(0.0, 1.0).float()


def fixed_noise(sigma: float) -> BatchApply:
    return lambda batch, rngs, grey: add_noise(batch, [sigma] * len(rngs), rngs, grey)


def blind_noise(low: float, high: float) -> BatchApply:
    """Noise of a level drawn per sample, uniform in [low, high] (the draw comes first, as in the reference)."""
    def apply(batch: torch.Tensor, rngs: Sequence[np.random.Generator], grey: Sequence[bool]) -> torch.Tensor:
        sigmas = [float(rng.uniform(low, high)) for rng in rngs]
        return add_noise(batch, sigmas, rngs, grey)

    return apply


def rain(preset: str) -> BatchApply:
    """`degradations.add_rain` with the preset's parameters drawn per sample: the streak layers
    are the reference's, made sample by sample (OpenCV's DFT correlation of a 45 px kernel takes
    0.2 ms, 9x less than torch's direct one); the blending runs on the batch."""
    def apply(batch: torch.Tensor, rngs: Sequence[np.random.Generator], grey: Sequence[bool]) -> torch.Tensor:
        height, width = batch.shape[-2:]
        layers = []
        for rng in rngs:
            params = sample_params(rng, RAIN_PRESETS[preset])
            kernel = _streak_kernel(params["length"], params["angle"], params["width"])
            pad = kernel.shape[0] // 2
            canvas = (height + 2 * pad, width + 2 * pad)
            seeds = (rng.random(canvas) < params["density"]) * rng.uniform(0.5, 1.0, canvas) * params["brightness"]
            streaks = cv2.filter2D(seeds.astype(np.float32), -1, kernel)[pad : pad + height, pad : pad + width]
            layers.append(streaks)
        streaks = torch.from_numpy(np.stack(layers))[:, None].clamp(0.0, 1.0)
        return 1.0 - (1.0 - batch) * (1.0 - streaks)

    return apply


def low_light(batch: torch.Tensor, rngs: Sequence[np.random.Generator], grey: Sequence[bool]) -> torch.Tensor:
    """`degradations.darken` with LOWLIGHT_RANGES drawn per sample."""
    params = [sample_params(rng, LOWLIGHT_RANGES) for rng in rngs]

    def column(name: str) -> torch.Tensor:
        return torch.tensor([p[name] for p in params], dtype=torch.float64).view(-1, 1, 1, 1)

    dark = column("exposure") * batch.double() ** column("gamma")
    std = torch.sqrt(column("shot_noise") * dark + column("read_noise") ** 2)
    shape = (batch.shape[2], batch.shape[3], batch.shape[1])
    noise = _chw([_noise(rng, shape, g) for rng, g in zip(rngs, grey)])
    return (dark + std * noise).clamp(0.0, 1.0).float()


def _each_image(batch: torch.Tensor, op: Callable[[np.ndarray, int], np.ndarray]) -> torch.Tensor:
    """`op(image, i)` on every crop of an NCHW batch as HWC numpy, stacked back into NCHW: for ops
    that have no batched form (OpenCV's JPEG, a degradation without a torch form here)."""
    images = batch.permute(0, 2, 3, 1).numpy()
    done = [op(np.ascontiguousarray(image), i) for i, image in enumerate(images)]
    return torch.from_numpy(np.stack(done)).permute(0, 3, 1, 2).contiguous()


def _sr(scale: int, then: BatchApply | None = None) -> BatchApply:
    def apply(batch: torch.Tensor, rngs: Sequence[np.random.Generator], grey: Sequence[bool]) -> torch.Tensor:
        low = bicubic_down(batch, scale)
        return low if then is None else then(low, rngs, grey)

    return apply


def _jpeg(quality: int) -> BatchApply:
    return lambda batch, rngs, grey: _each_image(batch, lambda image, i: jpeg(image, quality))


# The torch form of each training degradation, by name (degradations.DEGRADATIONS and the blind one).
BATCHED: dict[str, BatchApply] = {
    BLIND_DENOISE: blind_noise(*BLIND_SIGMA),
    **{f"denoise{sigma}": fixed_noise(sigma) for sigma in (15, 25, 30, 50)},
    **{f"sr{scale}": _sr(scale) for scale in (2, 3, 4)},
    "lr4-noise30": _sr(4, fixed_noise(30.0)),
    "lr4-jpeg30": _sr(4, _jpeg(30)),
    "derain": rain("light"),
    "derain-varied": rain("varied"),
    "derain-heavy": rain("heavy"),
    "lowlight": low_light,
    **{f"jpeg{quality}": _jpeg(quality) for quality in (10, 20, 30, 40)},
}


def looped(degradation: Degradation) -> BatchApply:
    """Any numpy degradation as a batch function, sample by sample (for one without a torch form).

    A grey sample stays grey only as far as the op keeps it so.
    """
    def apply(batch: torch.Tensor, rngs: Sequence[np.random.Generator], grey: Sequence[bool]) -> torch.Tensor:
        return _each_image(batch, lambda image, i: degradation(image, rngs[i]))

    return apply


def batched(degradation: Degradation) -> BatchApply:
    """The batch function for `degradation`: its torch form when there is one."""
    return BATCHED.get(degradation.name) or looped(degradation)
