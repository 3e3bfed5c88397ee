"""Training samples: seeded crops, flips/rotations and on-the-fly degradations, batch by batch.

Every random choice of sample `i` of step `t` comes from a numpy Generator seeded with
(--seed, t, i), and the image it is cut from from a per-epoch permutation of the images. A sample
therefore depends on the seed and its place in the *global* batch only - not on the process, the
thread that builds it or what was sampled before. That is what makes three things hold exactly:
a resumed run sees the batches an uninterrupted one would; N processes that each build their
slice of the global batch (`torchrun`, rank r builds indices [r*b, (r+1)*b)) train on the very
samples one process with batch N*b would; and `--workers` threads change speed, not results.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch

from adaptir_cli.data.batched import batched
from adaptir_cli.data.degradations import BLIND_DENOISE, DEGRADATIONS, Degradation, blind_denoise, get_degradation
from adaptir_cli.imaging.resize import modcrop
from adaptir_cli.training.data import (
    EPOCH_STREAM,
    SAMPLE_STREAM,
    TASK_STREAM,
    VALIDATION_STREAM,
    DataError,
    ImageSet,
    to_float,
)

# Blind denoising is validated at the benchmark's level, so its numbers read like the bench's.
BLIND_VALIDATION = "denoise30"


def degradation_names() -> list[str]:
    """What `--degradation` accepts: every benchmark degradation, plus blind denoising."""
    return [*DEGRADATIONS, BLIND_DENOISE]


def training_degradation(name: str) -> Degradation:
    return blind_denoise() if name == BLIND_DENOISE else get_degradation(name)


def validation_degradation(name: str) -> Degradation:
    """The degradation validation inputs are made with: fixed where training draws a level."""
    return get_degradation(BLIND_VALIDATION if name == BLIND_DENOISE else name)


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of a square crop: rotate by k * 90 degrees, mirror when k >= 4."""
    rotated = np.rot90(image, k % 4)
    return rotated[:, ::-1] if k >= 4 else rotated


@dataclass(frozen=True)
class Crop:
    """One sample before its degradation: integer pixels HWC, already flipped/rotated."""

    gt: np.ndarray
    lq: np.ndarray | None  # the given input of paired data
    grey: bool  # the clean crop was made grey; its noise is drawn grey too
    rng: np.random.Generator  # the sample's stream, where its degradation goes on drawing


def grey_pixels(rgb: np.ndarray) -> np.ndarray:
    """An integer RGB crop as the grey photograph it would be (ITU-R BT.601 luma in all three channels).

    Elementwise on purpose: a matrix product here would wake BLAS threads in the sampling thread.
    """
    red, green, blue = (rgb[..., c].astype(np.float32) for c in range(3))
    luma = np.rint(0.299 * red + 0.587 * green + 0.114 * blue).astype(rgb.dtype)
    return np.repeat(luma[..., None], 3, axis=2)


@dataclass(frozen=True)
class TaskData:
    """What one task trains on: clean images and a degradation, or given pairs (`images.lq`).

    `grey_share` of the synthetic samples are made grey before they are degraded (so that a base
    sees grey photographs with grey noise); 0 draws nothing for it, so older runs replay exactly.
    """

    task: str
    head_index: int
    scale: int
    images: ImageSet
    degradation: Degradation | None = None
    grey_share: float = 0.0

    def __post_init__(self) -> None:
        if (self.images.lq is None) == (self.degradation is None):
            raise ValueError("a task trains either on pairs or on clean images with a degradation")
        if not 0.0 <= self.grey_share <= 1.0:
            raise ValueError(f"the grey share must be in [0, 1], got {self.grey_share}")
        if self.grey_share and self.degradation is None:
            raise ValueError("given pairs are trained as they are: a grey share needs synthetic inputs")

    def crop(self, image: int, patch: int, rng: np.random.Generator) -> Crop:
        """A random crop of image `image`: `patch` px of input, `patch * scale` px of ground truth."""
        scale, gt = self.scale, self.images.gt[image]
        k = int(rng.integers(8))
        if self.degradation is None:
            assert self.images.lq is not None  # __post_init__: pairs when there is no degradation
            lq = self.images.lq[image]
            top = int(rng.integers(lq.shape[0] - patch + 1))
            left = int(rng.integers(lq.shape[1] - patch + 1))
            lq_crop = lq[top : top + patch, left : left + patch]
            gt_crop = gt[top * scale : (top + patch) * scale, left * scale : (left + patch) * scale]
            return Crop(dihedral(gt_crop, k), dihedral(lq_crop, k), False, rng)
        size = patch * scale
        top = int(rng.integers(gt.shape[0] - size + 1))
        left = int(rng.integers(gt.shape[1] - size + 1))
        # Degrading the crop, not the whole image, keeps the cost per sample small; the few
        # border pixels the bicubic kernel sees differently do not matter for training.
        clean = dihedral(gt[top : top + size, left : left + size], k)
        grey = bool(self.grey_share) and bool(rng.random() < self.grey_share)
        return Crop(grey_pixels(clean) if grey else clean, None, grey, rng)

    def degrade(self, crops: Sequence[Crop], patch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(lq, gt) float32 NCHW batches of `crops`: the given inputs, or the degradation of the batch."""
        gt = _batch_tensor([c.gt for c in crops])
        if self.degradation is None:
            return _batch_tensor([c.lq for c in crops]), gt  # type: ignore[misc]
        lq = batched(self.degradation)(gt, [c.rng for c in crops], [c.grey for c in crops])
        if tuple(lq.shape[1:]) != (3, patch, patch):
            raise DataError(
                f"degradation {self.degradation.name!r} turned {patch * self.scale} px crops into "
                f"{tuple(lq.shape[2:])}, not {patch} px: its scale does not match task {self.task}"
            )
        return lq, gt


def _batch_tensor(pixels: Sequence[np.ndarray]) -> torch.Tensor:
    """Integer HWC crops -> one float32 (N, 3, H, W) tensor in [0, 1]."""
    return torch.from_numpy(to_float(np.stack(pixels))).permute(0, 3, 1, 2).contiguous()


@dataclass(frozen=True)
class Batch:
    lq: torch.Tensor  # (n, 3, patch, patch)
    gt: torch.Tensor  # (n, 3, patch * scale, patch * scale)
    head_index: int  # the head (task) every sample of the batch trains


@dataclass(frozen=True)
class Crops:
    """A step's crops, cut (possibly ahead, in another thread) but not yet degraded."""

    step: int
    samples: list[Crop]


class BatchSampler:
    """Builds any slice of the global batch of any step, deterministically (see the module doc).

    In two halves: `crops` (indexing and slicing, cheap enough for a side thread) and `finish`
    (the degradation of the whole slice in torch, in the training thread, where its arithmetic
    does not fight the model's threads for the cores).
    """

    def __init__(self, tasks: Sequence[TaskData], patch: int, global_batch: int, seed: int) -> None:
        if not tasks:
            raise ValueError("no task to sample from")
        counts = {len(task.images) for task in tasks}
        if len(counts) != 1:
            raise ValueError("every task must sample from the same images")
        self.tasks = list(tasks)
        self.patch = patch
        self.global_batch = global_batch
        self.seed = seed
        self.count = counts.pop()
        # (epoch, its permutation): consecutive steps share an epoch. Replaced as one tuple, so
        # a side thread racing on an epoch change at worst computes the permutation twice.
        self._order: tuple[int, np.ndarray] = (-1, np.empty(0, dtype=np.int64))

    def _permutation(self, epoch: int) -> np.ndarray:
        cached = self._order
        if cached[0] != epoch:
            cached = (epoch, np.random.default_rng([self.seed, EPOCH_STREAM, epoch]).permutation(self.count))
            self._order = cached
        return cached[1]

    def image(self, step: int, index: int) -> int:
        """Images are visited epoch by epoch, each epoch in its own seeded order."""
        epoch, offset = divmod(step * self.global_batch + index, self.count)
        return int(self._permutation(epoch)[offset])

    def task(self, step: int) -> TaskData:
        """One task per step, the same in every process (pre-training several heads at once)."""
        if len(self.tasks) == 1:
            return self.tasks[0]
        choice = np.random.default_rng([self.seed, TASK_STREAM, step]).integers(len(self.tasks))
        return self.tasks[int(choice)]

    def crops(self, step: int, indices: Sequence[int]) -> Crops:
        task = self.task(step)
        samples = []
        for index in indices:
            rng = np.random.default_rng([self.seed, SAMPLE_STREAM, step, index])
            samples.append(task.crop(self.image(step, index), self.patch, rng))
        return Crops(step, samples)

    def finish(self, crops: Crops) -> Batch:
        task = self.task(crops.step)
        lq, gt = task.degrade(crops.samples, self.patch)
        return Batch(lq, gt, task.head_index)

    def batch(self, step: int, indices: Sequence[int]) -> Batch:
        return self.finish(self.crops(step, indices))


class BatchStream:
    """This process's batches, step after step; with `workers` > 0 the next step's crops are cut
    in a side thread while the current step trains (0: everything in the calling thread).

    `pin` puts each batch in pinned (page-locked) memory, for a CUDA device: only from there is a
    `non_blocking` copy to the GPU really asynchronous.
    """

    def __init__(
        self, sampler: BatchSampler, indices: Sequence[int], last_step: int, workers: int, pin: bool = False
    ) -> None:
        self.sampler = sampler
        self.pin = pin
        self.indices = list(indices)
        self.last_step = last_step
        self.ahead = ThreadPoolExecutor(1, thread_name_prefix="adaptir-crops") if workers > 0 else None
        self.pending: Future[Crops] | None = None

    def _crops(self, step: int) -> Crops:
        return self.sampler.crops(step, self.indices)

    def get(self, step: int) -> Batch:
        crops = self.pending.result() if self.pending is not None else None
        if crops is None or crops.step != step:
            crops = self._crops(step)
        self.pending = None
        if self.ahead is not None and step + 1 < self.last_step:
            self.pending = self.ahead.submit(self._crops, step + 1)
        batch = self.sampler.finish(crops)
        if self.pin:
            batch = replace(batch, lq=batch.lq.pin_memory(), gt=batch.gt.pin_memory())
        return batch

    def close(self) -> None:
        if self.ahead is not None:
            self.ahead.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "BatchStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ValidationPair:
    name: str
    lq: np.ndarray  # float32 HWC
    gt: np.ndarray  # float32 HWC, exactly `scale` times lq


def _center(image: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of a centred `size` px crop (the whole side where the image is smaller)."""
    height, width = image.shape[:2]
    return max(0, (height - size) // 2), max(0, (width - size) // 2)


def validation_pairs(
    images: ImageSet, scale: int, degradation: Degradation | None, seed: int, crop: int = 0
) -> list[ValidationPair]:
    """Fixed validation inputs: the given pairs, or clean images degraded once from seeded streams.

    `crop` > 0 keeps a centred crop of `crop` input px (faster validation on a CPU); 0 keeps
    whole images (mod-cropped to the scale).
    """
    pairs = []
    for index, name in enumerate(images.names):
        gt = to_float(images.gt[index])
        if images.lq is not None:
            lq = to_float(images.lq[index])
            gt = gt[: lq.shape[0] * scale, : lq.shape[1] * scale]
            if crop:
                top, left = _center(lq, crop)
                lq = lq[top : top + crop, left : left + crop]
                gt = gt[top * scale : (top + lq.shape[0]) * scale, left * scale : (left + lq.shape[1]) * scale]
        else:
            if degradation is None:
                raise ValueError("clean validation images need a degradation")
            if crop:
                top, left = _center(gt, crop * scale)
                gt = gt[top : top + crop * scale, left : left + crop * scale]
            gt = np.ascontiguousarray(modcrop(gt, scale))
            lq = degradation(gt, np.random.default_rng([seed, VALIDATION_STREAM, index]))
        if lq.shape[0] * scale != gt.shape[0] or lq.shape[1] * scale != gt.shape[1]:
            raise DataError(f"validation image {name}: input {lq.shape[:2]} is not 1/{scale} of {gt.shape[:2]}")
        pairs.append(ValidationPair(name, np.ascontiguousarray(lq), gt))
    return pairs
