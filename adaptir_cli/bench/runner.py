"""Running a benchmark: every image of every set through every method, scored by the protocol.

A *method* is one column of the results: the degraded input itself (`--baseline`: bicubic
up-scaling for SR), the bare base, or the base with one adapter. Each image's input is made once
and given to every method, so the columns differ by the method only. Noise and synthetic
degradations draw from `default_rng(seed + image index)` (index in the set's sorted order): a run
repeats exactly, and an image's input does not depend on how many methods or sets ran before it.

Outputs are quantised to uint8 before any metric, as papers do, and PSNR/SSIM are computed on
both channels: the protocol's (the one to compare with papers) and the other one.

Under torchrun each process scores its share of every set's images (`context`), and
`merge_results` puts the shares back in the sets' order: as every image keeps its index (and so
its seed), the merged result is the one a single process computes, means included.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from adaptir_cli import __version__
from adaptir_cli.adapters import AdapterFile, read_adapter
from adaptir_cli.adapters.errors import AdapterMismatchError
from adaptir_cli.bases.loading import sha256_file
from adaptir_cli.bench.protocol import CHANNELS, Channel, Protocol
from adaptir_cli.data.datasets import BenchImage, Dataset, DatasetError
from adaptir_cli.data.degradations import Degradation
from adaptir_cli.distributed import Distributed, share
from adaptir_cli.imaging.formats import DEFAULT_MAX_MEGAPIXELS, ImageReadError
from adaptir_cli.imaging.reading import read_image
from adaptir_cli.imaging.writing import write_image
from adaptir_cli.imaging.resize import imresize, modcrop
from adaptir_cli.imaging.tensors import to_numpy, to_tensor
from adaptir_cli.metrics import psnr, ssim, to_uint8
from adaptir_cli.restorer import Restorer, RestoreError, TileSettings
from adaptir_cli.runtime import accelerator_info

ContenderKind = Literal["baseline", "base", "adapter"]


@dataclass(frozen=True)
class Contender:
    """One column of a benchmark: what turns a degraded input into the image that is scored (the
    tables call it "Method"; a PETL method is adapters.Method)."""

    label: str
    kind: ContenderKind
    adapter: AdapterFile | None = None
    path: Path | None = None
    sha256: str | None = None
    forced: bool = False  # run although trained for another task or base weights (--force)

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, "kind": self.kind, "adapter": str(self.path) if self.path else None,
                "sha256": self.sha256, "forced": self.forced}

    def select(self, restorer: Restorer, task: str, *, bare: bool | None = None) -> None:
        """Make `restorer` run this column for `task`; `bare` (default: a "base" column) allows a
        bare head on a task whose base needs an adapter."""
        restorer.use(task, self.adapter, bare=self.kind == "base" if bare is None else bare, force=self.forced)


@dataclass
class ImageScore:
    image: str
    psnr: dict[Channel, float]
    ssim: dict[Channel, float]
    seconds: float | None  # restore time; None for the baseline, which runs no model
    output_pixels: int


@dataclass
class ContenderResult:
    method: Contender
    scores: list[ImageScore] = field(default_factory=list)

    def psnr(self, channel: Channel) -> float:
        return float(np.mean([s.psnr[channel] for s in self.scores])) if self.scores else float("nan")

    def ssim(self, channel: Channel) -> float:
        return float(np.mean([s.ssim[channel] for s in self.scores])) if self.scores else float("nan")

    @property
    def seconds_per_image(self) -> float | None:
        times = [s.seconds for s in self.scores if s.seconds is not None]
        return float(np.mean(times)) if times else None

    @property
    def megapixels_per_second(self) -> float | None:
        """Output megapixels per second of restore time (what a user waits for)."""
        timed = [s for s in self.scores if s.seconds is not None]
        seconds = sum(s.seconds or 0.0 for s in timed)
        return sum(s.output_pixels for s in timed) / 1e6 / seconds if seconds > 0 else None


@dataclass(frozen=True)
class Failure:
    image: str
    method: str | None  # None: the image itself could not be used (unreadable, wrong size)
    error: str


@dataclass
class DatasetResult:
    name: str
    folder: Path
    images: int
    results: list[ContenderResult]
    paired: bool = False  # inputs are the set's own files, not made by the task's degradation
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class RunInfo:
    """What produced the numbers: base, device, precision, tiling and software versions."""

    task: str
    base: dict[str, str] | None
    device: str | None
    precision: str | None
    tile: dict[str, int] | None
    accelerator: dict[str, object] | None = None  # GPU, CUDA version, TF32 policy
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    versions: dict[str, str] = field(default_factory=lambda: {
        "adaptir": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
    })
    machine: dict[str, object] = field(default_factory=lambda: {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    })


@dataclass
class BenchResult:
    info: RunInfo
    protocol: Protocol
    methods: list[Contender]
    datasets: list[DatasetResult]

    @property
    def failures(self) -> int:
        return sum(len(d.failures) for d in self.datasets)


@dataclass
class SpeedResult:
    label: str
    input_size: tuple[int, int]  # (height, width)
    output_size: tuple[int, int]
    warmup: int
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def megapixels_per_second(self) -> float:
        return self.output_size[0] * self.output_size[1] / 1e6 / self.median


@dataclass
class SpeedReport:
    info: RunInfo
    results: list[SpeedResult]


class BenchError(ValueError):
    """A benchmark that cannot run as asked; the message says what to change."""


ImageCallback = Callable[[str, str, list[Failure]], None]


def run_info(task: str, restorer: Restorer | None, settings: TileSettings) -> RunInfo:
    if restorer is None:
        return RunInfo(task, None, None, None, None)
    base = restorer.base
    tile, overlap = restorer.tile_settings(settings)
    return RunInfo(
        task,
        {"name": base.name, "sha256": base.sha256, "architecture": base.descriptor.architecture, "source": base.source},
        str(restorer.device),
        restorer.precision,
        {"tile": tile, "overlap": overlap, "batch": restorer.tile_batch(settings)},
        accelerator_info(restorer.device),
    )


def plan_methods(
    adapters: list[Path | None], *, restorer: Restorer | None, baseline: bool, scale: int
) -> list[Contender]:
    """The columns: the baseline first (if asked), then the bare base or each adapter.

    No adapters means the bare base; `None` in `adapters` asks for the bare base beside adapters.
    Labels are file stems, made unique so that each names one column.
    """
    methods = [Contender("bicubic" if scale > 1 else "input", "baseline")] if baseline else []
    if restorer is None:
        if adapters:
            raise BenchError("--adapter needs --base: an adapter only runs on the base it was trained for")
        return methods
    for path in adapters or [None]:
        if path is None:
            methods.append(Contender(restorer.base.name, "base"))
        else:
            methods.append(Contender(path.stem, "adapter", read_adapter(path), path, sha256_file(path)))
    seen: dict[str, int] = {}
    for index, method in enumerate(methods):
        seen[method.label] = seen.get(method.label, 0) + 1
        if seen[method.label] > 1:
            methods[index] = replace(method, label=f"{method.label}#{seen[method.label]}")
    return methods


def admit(method: Contender, restorer: Restorer, task: str, *, bare: bool, force: bool) -> Contender:
    """`method`, checked against the base before any image: an adapter trained for another task or
    on other base weights is refused, or with `force` returned marked `forced` (the results say so)."""
    try:
        method.select(restorer, task, bare=bare)
        return method
    except AdapterMismatchError:
        if not force:
            raise
    forced = replace(method, forced=True)
    forced.select(restorer, task, bare=bare)
    return forced


def check_dataset(dataset: Dataset, protocol: Protocol) -> list[str]:
    """Refuse pair sets made for another task; notes for combinations papers do not report."""
    spec = dataset.spec
    if spec is None:
        return ["custom set: its numbers compare with no paper"]
    if protocol.task in spec.tasks:
        return []
    if spec.pairs is not None:
        raise DatasetError(
            f"{spec.name} holds {spec.tasks[0]} pairs; bench it with --task {spec.tasks[0]}, not {protocol.task}"
        )
    return [f"{spec.name} is not a standard set for {protocol.task}: its numbers compare with no paper"]


def run_benchmark(
    datasets: list[Dataset],
    protocol: Protocol,
    degradation: Degradation,
    methods: list[Contender],
    restorer: Restorer | None,
    settings: TileSettings | None = None,
    *,
    save_images: Path | None = None,
    on_image: ImageCallback | None = None,
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
    context: Distributed | None = None,
) -> BenchResult:
    """Score every method on every image; failures are recorded per image and the run goes on.

    Files declaring more than `max_megapixels` (None: no limit) fail without being decoded. With
    a `context` of several processes, only this process's share of each set's images is scored
    (`merge_results` joins the shares). A "base" contender runs `restorer`'s bare head for the
    task, whichever the task: refusing a task whose base needs an adapter is the caller's choice
    (`adaptir bench` refuses one without `--adapter`; `--adapter ''` asks for the bare head).
    """
    settings = settings or TileSettings(tile=0)
    results = []
    for dataset in datasets:
        notes = check_dataset(dataset, protocol)
        outcome = DatasetResult(dataset.name, dataset.folder, len(dataset.images), [ContenderResult(m) for m in methods],
                                paired=dataset.paired, notes=notes)
        indexed = list(enumerate(dataset.images))
        for index, image in share(indexed, context) if context is not None else indexed:
            failures = _bench_image(
                image, index, outcome, protocol, degradation, restorer, settings, save_images, max_megapixels
            )
            outcome.failures.extend(failures)
            if on_image is not None:
                on_image(dataset.name, image.name, failures)
        results.append(outcome)
    return BenchResult(run_info(protocol.task, restorer, settings), protocol, methods, results)


def merge_results(parts: list[BenchResult], datasets: list[Dataset]) -> BenchResult:
    """One result from the processes' shares of `datasets` (the sets they ran), in the sets' order.

    The first share's run information stands for the run, with the number of processes added.
    """
    first = parts[0]
    merged = []
    for number, (dataset, outcome) in enumerate(zip(datasets, first.datasets)):
        order = {image.name: index for index, image in enumerate(dataset.images)}
        shares = [part.datasets[number] for part in parts]
        results = [
            ContenderResult(result.method, sorted(
                (score for part in shares for score in part.results[column].scores), key=lambda s: order[s.image]
            ))
            for column, result in enumerate(outcome.results)
        ]
        # A stable sort keeps each image's failures in method order.
        failures = sorted((f for part in shares for f in part.failures), key=lambda f: order[f.image])
        merged.append(replace(outcome, results=results, failures=failures))
    info = replace(first.info, machine={**first.info.machine, "processes": len(parts)})
    return BenchResult(info, first.protocol, first.methods, merged)


def _bench_image(
    image: BenchImage,
    index: int,
    outcome: DatasetResult,
    protocol: Protocol,
    degradation: Degradation,
    restorer: Restorer | None,
    settings: TileSettings,
    save_images: Path | None,
    max_megapixels: float | None,
) -> list[Failure]:
    try:
        gt, lq = make_pair(image, index, protocol, degradation, max_megapixels)
    except (ImageReadError, ValueError) as error:
        return [Failure(image.name, None, str(error))]
    failures = []
    for result in outcome.results:
        method = result.method
        try:
            output, seconds = _run_method(method, lq, protocol, restorer, settings)
            if output.shape != gt.shape:
                raise ValueError(
                    f"the output is {output.shape[1]}x{output.shape[0]}, the target {gt.shape[1]}x{gt.shape[0]}"
                )
            result.scores.append(score_image(image.name, output, gt, protocol.crop, seconds))
            if save_images is not None:
                _save(save_images / outcome.name / method.label / f"{Path(image.name).stem}.png", output)
        except (RestoreError, ValueError, RuntimeError, OSError) as error:
            failures.append(Failure(image.name, method.label, str(error)))
    return failures


def make_pair(
    image: BenchImage, index: int, protocol: Protocol, degradation: Degradation,
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
) -> tuple[np.ndarray, np.ndarray]:
    """(ground truth as uint8 HWC RGB, the input as float32 HWC RGB in [0, 1]) for one test image.

    The ground truth is mod-cropped to the scale. A grayscale image keeps a grayscale input (the
    first channel of the degraded replicated image, replicated again): its noise is gray noise,
    and the model sees three equal channels, as BasicSR feeds gray images (Set14's bridge).
    """
    loaded = read_image(image.gt, max_megapixels=max_megapixels)
    gt = to_uint8(modcrop(loaded.rgb, protocol.scale))
    if image.lq is not None:
        lq = read_image(image.lq, max_megapixels=max_megapixels).rgb
        expected = (gt.shape[0] // protocol.scale, gt.shape[1] // protocol.scale)
        if lq.shape[:2] != expected:
            raise ValueError(
                f"{image.lq.name} is {lq.shape[1]}x{lq.shape[0]} but its target {image.gt.name} needs a "
                f"{expected[1]}x{expected[0]} input at x{protocol.scale}"
            )
        return gt, lq
    lq = degradation(loaded.rgb, np.random.default_rng(protocol.seed + index))
    if loaded.grayscale:
        lq = np.repeat(lq[..., :1], 3, axis=2)
    return gt, np.ascontiguousarray(lq, dtype=np.float32)


def _run_method(
    method: Contender, lq: np.ndarray, protocol: Protocol, restorer: Restorer | None, settings: TileSettings
) -> tuple[np.ndarray, float | None]:
    if method.kind == "baseline":
        upscaled = imresize(lq, scale=protocol.scale) if protocol.scale > 1 else lq
        return to_uint8(upscaled), None
    assert restorer is not None, "model methods are only planned with a restorer"
    method.select(restorer, protocol.task)
    output, stats = restorer.restore(to_tensor(lq), settings)
    return to_uint8(to_numpy(output)), stats.seconds


def score_image(name: str, output: np.ndarray, gt: np.ndarray, crop: int, seconds: float | None = None) -> ImageScore:
    """PSNR and SSIM of a uint8 output on both channels, `crop` border pixels left out."""
    return ImageScore(
        name,
        {c: psnr(output, gt, crop_border=crop, test_y_channel=c == "y") for c in CHANNELS},
        {c: ssim(output, gt, crop_border=crop, test_y_channel=c == "y") for c in CHANNELS},
        seconds,
        output.shape[0] * output.shape[1],
    )


def _save(path: Path, pixels: np.ndarray) -> None:
    # Exactly the scored pixels: uint8 / 255 re-quantises to the same values.
    write_image(path, pixels.astype(np.float32) / np.float32(255.0))


def run_speed(
    restorer: Restorer,
    task: str,
    methods: list[Contender],
    size: tuple[int, int],
    *,
    repeats: int = 5,
    warmup: int = 1,
    settings: TileSettings | None = None,
    seed: int = 0,
) -> SpeedReport:
    """Time restore on one random image of `size` (height, width): warm-up runs, then the median of `repeats`.

    Warm-up runs absorb one-time costs (allocator growth, kernel selection, lazy CUDA init) that
    a long batch pays once; the median ignores the odd run slowed by another process.
    """
    if repeats < 1 or warmup < 0:
        raise BenchError(f"repeats must be >= 1 and warm-up >= 0, got {repeats} and {warmup}")
    settings = settings or TileSettings(tile=0)
    image = to_tensor(np.random.default_rng(seed).random((*size, 3), dtype=np.float32))
    results = []
    for method in methods:
        if method.kind == "baseline":
            raise BenchError("--speed times the model; drop --baseline")
        method.select(restorer, task)
        times = []
        for run in range(warmup + repeats):
            start = time.perf_counter()
            output, _ = restorer.restore(image, settings)
            if run >= warmup:
                times.append(time.perf_counter() - start)
        results.append(SpeedResult(method.label, size, tuple(output.shape[-2:]), warmup, times))
    return SpeedReport(run_info(task, restorer, settings), results)
