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
from functools import partial

import numpy as np
import torch

from adaptir_cli.data.degradations import DEGRADATIONS, Degradation, add_gaussian_noise, get_degradation
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

# Blind denoising (IPT-style pre-training of one head for every level): sigma drawn per sample.
BLIND_DENOISE = "denoise"
BLIND_SIGMA = (0.0, 55.0)
# Blind denoising is validated at the benchmark's level, so its numbers read like the bench's.
BLIND_VALIDATION = "denoise30"


def blind_denoise() -> Degradation:
    low, high = BLIND_SIGMA
    return Degradation(
        BLIND_DENOISE, 1, f"Gaussian noise, sigma uniform in [{low:g}, {high:g}] per sample (0..255 scale)",
        lambda img, rng: add_gaussian_noise(img, float(rng.uniform(low, high)), rng),
    )


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
class TaskData:
    """What one task trains on: clean images and a degradation, or given pairs (`images.lq`)."""

    task: str
    head_index: int
    scale: int
    images: ImageSet
    degradation: Degradation | None = None

    def __post_init__(self) -> None:
        if (self.images.lq is None) == (self.degradation is None):
            raise ValueError("a task trains either on pairs or on clean images with a degradation")

    def sample(self, image: int, patch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random (lq, gt) crop pair, float32 HWC: `patch` px and `patch * scale` px."""
        scale, gt, degradation = self.scale, self.images.gt[image], self.degradation
        k = int(rng.integers(8))
        if degradation is None:
            assert self.images.lq is not None  # __post_init__: pairs when there is no degradation
            lq = self.images.lq[image]
            top = int(rng.integers(lq.shape[0] - patch + 1))
            left = int(rng.integers(lq.shape[1] - patch + 1))
            lq_crop = lq[top : top + patch, left : left + patch]
            gt_crop = gt[top * scale : (top + patch) * scale, left * scale : (left + patch) * scale]
            return to_float(dihedral(lq_crop, k)), to_float(dihedral(gt_crop, k))
        size = patch * scale
        top = int(rng.integers(gt.shape[0] - size + 1))
        left = int(rng.integers(gt.shape[1] - size + 1))
        # Degrading the crop, not the whole image, keeps CPU cost per sample small; the few
        # border pixels the bicubic kernel sees differently do not matter for training.
        clean = np.ascontiguousarray(to_float(dihedral(gt[top : top + size, left : left + size], k)))
        degraded = degradation(clean, rng)
        if degraded.shape != (patch, patch, 3):
            raise DataError(
                f"degradation {degradation.name!r} turned a {size} px crop into {degraded.shape[:2]}, "
                f"not {patch} px: its scale does not match task {self.task}"
            )
        return degraded, clean


@dataclass(frozen=True)
class Batch:
    lq: torch.Tensor  # (n, 3, patch, patch)
    gt: torch.Tensor  # (n, 3, patch * scale, patch * scale)
    head_index: int  # the head (task) every sample of the batch trains


class BatchSampler:
    """Builds any slice of the global batch of any step, deterministically (see the module doc)."""

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
        # sampling threads racing on an epoch change at worst compute the permutation twice.
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

    def sample(self, step: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, SAMPLE_STREAM, step, index])
        return self.task(step).sample(self.image(step, index), self.patch, rng)

    def batch(self, step: int, indices: Sequence[int], pool: ThreadPoolExecutor | None = None) -> Batch:
        task = self.task(step)
        build = partial(self.sample, step)
        samples = list(pool.map(build, indices)) if pool is not None else [build(i) for i in indices]
        lq = torch.from_numpy(np.stack([s[0] for s in samples]).transpose(0, 3, 1, 2).copy())
        gt = torch.from_numpy(np.stack([s[1] for s in samples]).transpose(0, 3, 1, 2).copy())
        return Batch(lq, gt, task.head_index)


class BatchStream:
    """This process's batches, step after step, the next one prepared while the current one trains.

    `workers` threads build the samples of a batch (the degradations are numpy/OpenCV code that
    releases the GIL); one more thread builds the next batch ahead. `workers=0` builds everything
    in the calling thread. `pin` puts each batch in pinned (page-locked) memory, for a CUDA
    device: only from there is a `non_blocking` copy to the GPU really asynchronous.
    """

    def __init__(
        self, sampler: BatchSampler, indices: Sequence[int], last_step: int, workers: int, pin: bool = False
    ) -> None:
        self.sampler = sampler
        self.pin = pin
        self.indices = list(indices)
        self.last_step = last_step
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="adaptir-sample") if workers > 0 else None
        self.ahead = ThreadPoolExecutor(1, thread_name_prefix="adaptir-batch") if workers > 0 else None
        self.pending: tuple[int, Future[Batch]] | None = None

    def _build(self, step: int) -> Batch:
        batch = self.sampler.batch(step, self.indices, self.pool)
        if self.pin:  # on the thread ahead when there is one: the copy into pinned memory overlaps the step
            batch = replace(batch, lq=batch.lq.pin_memory(), gt=batch.gt.pin_memory())
        return batch

    def get(self, step: int) -> Batch:
        if self.pending is not None and self.pending[0] == step:
            batch = self.pending[1].result()
        else:
            batch = self._build(step)
        self.pending = None
        if self.ahead is not None and step + 1 < self.last_step:
            self.pending = (step + 1, self.ahead.submit(self._build, step + 1))
        return batch

    def close(self) -> None:
        for pool in (self.ahead, self.pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

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
