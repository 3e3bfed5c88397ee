"""`--task auto`: a tiny classifier that looks at an image and picks the shipped task for it.

The classifier is a separate network of about 25 K parameters, not features of a base: it
works the same whatever base serves the chosen task, and costs a few milliseconds per image
on a CPU. It reads up to 16 crops of 64 x 64 pixels spread over the image and averages their
class probabilities, so a large photo costs no more than a small one.

Its classes are the degradations that can be told apart from the pixels alone; each maps to the
task restore runs (and so to that task's default base and shipped adapter):

- denoise, derain, derain-heavy, lowlight, lr4-noise30, lr4-jpeg30: the task of the same name;
- clean: an image with no visible degradation. Nothing at scale 1 would change it, and whether
  it is a low-resolution image cannot be seen from its pixels, so it is upscaled (sr4): the
  output is 4 times larger. Pass --task explicitly when that is not wanted.

An explicit --task is never replaced: only jobs whose task is "auto" are classified.
experiments/auto-task/ trains the shipped weights and measures their accuracy (docs/auto-task.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from adaptir_cli.data.degradations import get_degradation
from adaptir_cli.distributed import Distributed, gather, share
from adaptir_cli.file_jobs import STDIO, Job, JobPlanError, JobResult
from adaptir_cli.imaging.formats import DEFAULT_MAX_MEGAPIXELS
from adaptir_cli.imaging.reading import read_image
from adaptir_cli.metrics import to_uint8
from adaptir_cli.tasks import AUTO

CLASSIFIER_NAME = "auto-task"
FORMAT = "adaptir-auto-task"

# Class -> the task restore runs for it.
TASK_OF_LABEL: dict[str, str] = {
    "clean": "sr4",
    "denoise": "denoise",
    "derain": "derain",
    "derain-heavy": "derain-heavy",
    "lowlight": "lowlight",
    "lr4-noise30": "lr4-noise30",
    "lr4-jpeg30": "lr4-jpeg30",
}
LABELS: tuple[str, ...] = tuple(TASK_OF_LABEL)
LABEL_TEXT: dict[str, str] = {
    "clean": "no degradation seen: upscaled x4",
    "denoise": "noise",
    "derain": "light rain",
    "derain-heavy": "heavy rain",
    "lowlight": "low light",
    "lr4-noise30": "low resolution with noise",
    "lr4-jpeg30": "low resolution with JPEG artefacts",
}

CROP = 64
CROPS = 16
# Crops start on JPEG's 8 x 8 block grid (which starts at the image's top-left corner), so that
# block edges fall on the same pixels of every crop and the network can see them as a grid.
BLOCK = 8
WIDTHS = (12, 24, 32, 48)


class AutoTaskError(ValueError):
    """The classifier file is missing or is not one (a broken install or a wrong file)."""


class TaskClassifier(nn.Module):
    """Four 3 x 3 convolutions (full resolution first, so that pixel noise is seen before any
    down-sampling, then three at stride 2), pooled to the mean and standard deviation of each
    feature (how strong and how uneven: rain is uneven, noise is not), then one linear layer."""

    def __init__(self, labels: Sequence[str] = LABELS, widths: Sequence[int] = WIDTHS) -> None:
        super().__init__()
        self.labels = tuple(labels)
        self.widths = tuple(widths)
        layers: list[nn.Module] = []
        channels = 3
        for index, width in enumerate(self.widths):
            layers += [nn.Conv2d(channels, width, 3, stride=1 if index == 0 else 2, padding=1), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers)
        self.classify = nn.Linear(2 * channels, len(self.labels))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> (N, classes) logits."""
        features = self.features(images - 0.5).flatten(2)
        pooled = torch.cat([features.mean(-1), features.std(-1, unbiased=False)], dim=1)
        return self.classify(pooled)


def save_classifier(path: Path, model: TaskClassifier, training: dict[str, object]) -> Path:
    """Write the weights with what is needed to rebuild the network and where it came from."""
    metadata = {
        "format": FORMAT,
        "labels": json.dumps(list(model.labels)),
        "widths": json.dumps(list(model.widths)),
        "crop": str(CROP),
        "training": json.dumps(training),
    }
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=metadata)
    return path


def read_classifier(path: Path) -> TaskClassifier:
    """Load a classifier file written by `save_classifier`, strictly."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (OSError, SafetensorError) as error:  # missing, cut off or not safetensors at all
        raise AutoTaskError(f"cannot read the task classifier {path}: {error}\nHint: reinstall adaptir.") from None
    if metadata.get("format") != FORMAT:
        raise AutoTaskError(f"{path} is not an adaptir task classifier (no {FORMAT!r} metadata)\nHint: reinstall adaptir.")
    labels = json.loads(metadata["labels"])
    unknown = set(labels) - set(TASK_OF_LABEL)
    if unknown:
        raise AutoTaskError(f"{path} names classes this adaptir has no task for: {sorted(unknown)}\nHint: upgrade adaptir.")
    model = TaskClassifier(labels, json.loads(metadata["widths"]))
    model.load_state_dict(tensors, strict=True)
    return model.eval()


@cache
def shipped_classifier() -> TaskClassifier:
    """The classifier inside the package (weights_manifest.toml [classifiers.auto-task])."""
    from adaptir_cli.bases.loading import sha256_file
    from adaptir_cli.weights.manifest import default_manifest

    entry = default_manifest().classifiers.get(CLASSIFIER_NAME)
    if entry is None or entry.path is None or not entry.path.is_file():
        raise AutoTaskError("the task classifier is missing from the installation\nHint: reinstall adaptir, or pass --task.")
    if entry.path.stat().st_size != entry.size or sha256_file(entry.path) != entry.sha256:
        raise AutoTaskError(f"{entry.path} does not match its manifest entry (size or sha256)\nHint: reinstall adaptir.")
    return read_classifier(entry.path)


def crop_corners(height: int, width: int, size: int = CROP, count: int = CROPS) -> list[tuple[int, int]]:
    """Top-left corners of up to `count` crops spread evenly over the image, on the BLOCK grid
    (deterministic, so the same image always gets the same task); fewer where it is too small."""
    side = int(np.sqrt(count))

    def starts(extent: int) -> list[int]:
        room = max(extent - size, 0)
        return sorted({round(room * i / (side - 1)) // BLOCK * BLOCK for i in range(side)})

    return [(top, left) for top in starts(height) for left in starts(width)]


@dataclass(frozen=True)
class AutoChoice:
    """What the classifier saw in one image, and the task that follows."""

    label: str
    task: str
    confidence: float
    probabilities: dict[str, float]

    def describe(self) -> str:
        return f"{self.task} ({LABEL_TEXT[self.label]}, {self.confidence:.0%})"

    def to_json(self) -> dict[str, object]:
        return {
            "class": self.label, "task": self.task, "confidence": round(self.confidence, 4),
            "probabilities": {label: round(p, 4) for label, p in self.probabilities.items()},
        }


@torch.no_grad()
def classify(rgb: np.ndarray, model: TaskClassifier | None = None) -> AutoChoice:
    """Pick the task for one float32 RGB image (H, W, 3) in [0, 1]."""
    model = model or shipped_classifier()
    height, width = rgb.shape[:2]
    rows, cols = min(CROP, height), min(CROP, width)
    image = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)
    crops = torch.stack([image[:, t : t + rows, l : l + cols] for t, l in crop_corners(height, width)])
    probabilities = model(crops).softmax(dim=1).mean(dim=0)
    best = int(probabilities.argmax())
    label = model.labels[best]
    return AutoChoice(
        label, TASK_OF_LABEL[label], float(probabilities[best]),
        {name: float(p) for name, p in zip(model.labels, probabilities)},
    )


def choose_tasks(
    jobs: Sequence[Job], *, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS, model: TaskClassifier | None = None,
    context: Distributed | None = None,
) -> tuple[list[Job], dict[Path, AutoChoice], list[JobResult]]:
    """Give every job whose task is "auto" the task its image shows; other jobs are left as they are.

    Returns the jobs to run, the choice made for each classified output, and a failed result for
    each image that could not be read (it is reported like any other bad file; the batch goes on).
    Under torchrun (`context`) each process classifies its share of the images and every process
    gets all the choices, so all of them plan the same jobs.
    """
    auto = [job for job in jobs if job.task == AUTO]
    for job in auto:  # every process checks every job, so that all of them fail or none does
        if job.adapter is not None:
            raise JobPlanError(
                f"--task auto picks the adapter with the task, but {job.source} was given one"
                "\nHint: drop --adapter for the inputs with --task auto, or name their task."
            )
        if job.source == STDIO:
            raise JobPlanError(
                "--task auto reads each image before restoring it, and standard input can be read only once"
                "\nHint: save the image to a file first, or pass the task (--task derain, ...)."
            )
    if not auto:
        return list(jobs), {}, []
    model = model or shipped_classifier()  # in every process, even one whose share is empty
    choices: dict[Path, AutoChoice] = {}
    unreadable: list[JobResult] = []
    for job in share(auto, context) if context else auto:
        try:
            image = read_image(job.source, max_megapixels=max_megapixels)
        except (OSError, ValueError) as error:
            unreadable.append(JobResult(job, "failed", str(error)))
            continue
        choices[job.output] = classify(image.rgb, model)
    if context:
        parts = gather((choices, unreadable), context)
        choices = {output: choice for part, _ in parts for output, choice in part.items()}
        position = {job.output: index for index, job in enumerate(jobs)}
        unreadable = sorted((r for _, part in parts for r in part), key=lambda result: position[result.job.output])
    planned = [
        job if job.task != AUTO else replace(job, task=choices[job.output].task)
        for job in jobs
        if job.task != AUTO or job.output in choices
    ]
    return planned, choices, unreadable


def synthesise(clean: np.ndarray, label: str, rng: np.random.Generator) -> np.ndarray:
    """One training or test input of class `label` made from a clean float RGB image, with the
    project's own degradations, quantised to 8 bits as an image read from a file is.

    "clean" is the image itself or its x2/x4 bicubic down-sampling (clean low-resolution inputs
    are what SR is for); "denoise" draws sigma from the levels the blind denoiser covers.
    """
    if label == "clean":
        name = ("sr2", "sr4", None)[rng.integers(3)]
        degraded = clean if name is None else get_degradation(name)(clean, rng)
    elif label == "denoise":
        degraded = get_degradation(f"denoise{(15, 25, 30, 50)[rng.integers(4)]}")(clean, rng)
    else:
        degraded = get_degradation(label)(clean, rng)
    return to_uint8(degraded).astype(np.float32) / np.float32(255.0)
