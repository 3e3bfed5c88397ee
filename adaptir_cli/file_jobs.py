"""Turning inputs (files and folders) into restore jobs, and running them one image at a time.

One code path serves a single file and a folder of thousands, so no setting is honoured in one
mode and ignored in the other. A failed image is reported and the run goes on. Outputs are
checked again just before each image, and never replaced without `overwrite`, so two runs on the
same folder share the work instead of redoing and clobbering each other's.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np
import torch

from adaptir_cli.atomic_files import TargetExistsError, remove_stale_temporaries
from adaptir_cli.imaging.formats import DEFAULT_MAX_MEGAPIXELS, DEFAULT_QUALITY, IMAGE_EXTENSIONS, LoadedImage, has_image_name, is_image_file
from adaptir_cli.imaging.reading import decode_image, is_complete_image, read_image
from adaptir_cli.imaging.writing import plan_output, resize_alpha
from adaptir_cli.imaging.device_samples import device_samples
from adaptir_cli.imaging.tensors import to_tensor
from adaptir_cli.output_writer import InOrder, OutputWriter
from adaptir_cli.restorer import Restorer, RestoreStats, TileSettings


# As an input: the image is read from standard input; as the output: written to standard output.
STDIO = Path("-")
# The format written to standard output unless --ext names another.
STDOUT_EXTENSION = ".png"


class JobPlanError(ValueError):
    """The command line does not describe a runnable set of jobs (a usage error)."""


@dataclass(frozen=True)
class Job:
    source: Path  # STDIO: standard input
    output: Path  # STDIO: standard output
    task: str
    adapter: Path | None = None
    extension: str | None = None  # the output format where `output` does not name it (STDIO)


def names_one_image(output: Path) -> bool:
    """Whether OUTPUT is one image (result.png, or - for standard output) rather than a folder.

    An existing folder keeps being a folder whatever its name: `out.png/` was one before.
    """
    return output == STDIO or (output.suffix.lower() in IMAGE_EXTENSIONS and not output.is_dir())


@dataclass
class JobResult:
    job: Job
    status: Literal["ok", "skipped", "failed"]
    error: str = ""
    stats: RestoreStats = field(default_factory=RestoreStats)
    input_size: tuple[int, int] = (0, 0)
    output_size: tuple[int, int] = (0, 0)

    def to_json(self) -> dict[str, object]:
        return {
            "input": str(self.job.source),
            "output": str(self.job.output),
            "task": self.job.task,
            "adapter": str(self.job.adapter) if self.job.adapter else None,
            "status": self.status,
            "error": self.error or None,
            "input_size": list(self.input_size),
            "output_size": list(self.output_size),
            "seconds": round(self.stats.seconds, 4),
            "tile": self.stats.tile,
            "batch": self.stats.batch,
            "tiles": self.stats.tiles,
            "fp32_recomputed_tiles": self.stats.fp32_recomputed,
            "oom_retries": self.stats.oom_retries,
            "notes": self.stats.notes,
        }


SKIP_MESSAGE = "output exists (use --overwrite)"


def _expand(path: Path, recursive: bool) -> list[tuple[Path, Path]]:
    """(file, its path relative to the output folder) for one command-line input.

    A broken symbolic link with an image name is kept: it fails when read, and is reported.
    """
    if path.is_file():
        return [(path, Path(path.name))]
    if path.is_dir():
        found = path.rglob("*") if recursive else path.iterdir()
        return sorted((f, f.relative_to(path)) for f in found if is_image_file(f) or _broken_link(f))
    raise JobPlanError(f"input not found: {path}")


def _broken_link(path: Path) -> bool:
    return has_image_name(path) and path.is_symlink() and not path.exists()


def _check_inside(output: Path, output_dir: Path) -> None:
    """Refuse an output that a symbolic link inside OUTPUT_DIR would send elsewhere."""
    root = output_dir.resolve()
    if not output.parent.resolve().is_relative_to(root):
        link = next((p for p in [output.parent, *output.parent.parents] if p.is_symlink()), output.parent)
        raise JobPlanError(
            f"{link} is a symbolic link to {link.resolve()}: {output.name} would be written outside {output_dir}; "
            "remove the link or restore into another folder"
        )


def _per_input(values: list, count: int, what: str) -> list:
    if len(values) in (0, 1):
        return (values or [None]) * count
    if len(values) != count:
        raise JobPlanError(f"give one {what} for all inputs or one per input ({count}); got {len(values)}")
    return values


def plan_jobs(
    inputs: list[Path],
    output: Path,
    tasks: list[str],
    adapters: list[Path] | None = None,
    *,
    recursive: bool = False,
    suffix: str = "",
    ext: str | None = None,
) -> list[Job]:
    """One job per image; `tasks`/`adapters` hold one value for all inputs or one per input.

    `output` is a folder, or one image file (see `names_one_image`) for a single input file;
    STDIO as an input or output means standard input or output.
    """
    if not tasks:
        raise JobPlanError("--task is required")
    for option, value in (("--suffix", suffix), ("--ext", ext or "")):
        if any(separator in value for separator in ("/", os.sep, os.altsep) if separator):
            raise JobPlanError(f"{option} {value!r} must not contain a path separator: it names files, not folders")
    extension = "." + ext.lstrip(".").lower() if ext else None
    if extension and extension not in IMAGE_EXTENSIONS:
        raise JobPlanError(f"--ext {ext!r} is not a format adaptir writes; use one of {', '.join(sorted(IMAGE_EXTENSIONS))}")
    if names_one_image(output):
        _check_one_image(inputs, output, suffix, extension)
    elif STDIO in inputs:
        raise JobPlanError(
            f"{output} is a folder, but standard input (-) has no file name to give the output"
            "\nHint: name the output file (result.png), or - for standard output."
        )
    task_per_input = _per_input(tasks, len(inputs), "--task")
    adapter_per_input = _per_input(list(adapters or []), len(inputs), "--adapter")
    jobs: list[Job] = []
    for path, task, adapter in zip(inputs, task_per_input, adapter_per_input):
        if names_one_image(output):
            jobs.append(Job(path, output, task, adapter, (extension or STDOUT_EXTENSION) if output == STDIO else None))
            continue
        for source, relative in _expand(path, recursive):
            name = f"{relative.stem}{suffix}{extension or source.suffix.lower()}"
            jobs.append(Job(source, _output_in(output, relative.with_name(name), source), task, adapter))
    outputs = [job.output for job in jobs]
    if len(set(outputs)) != len(outputs):
        clash = next(o for o in outputs if outputs.count(o) > 1)
        raise JobPlanError(f"two inputs would both be written to {clash}; restore them into separate folders")
    return jobs


def _check_one_image(inputs: list[Path], output: Path, suffix: str, extension: str | None) -> None:
    """An output naming one image takes one input file (or standard input) and names it fully."""
    folder_hint = "\nHint: give an output folder (out/) for several images."
    if len(inputs) != 1 or inputs[0].is_dir():
        what = f"{len(inputs)} inputs are given" if len(inputs) != 1 else f"{inputs[0]} is a folder"
        raise JobPlanError(f"{output} names one image file, but {what}{folder_hint}")
    source = inputs[0]
    if source != STDIO and not source.exists():
        raise JobPlanError(f"input not found: {source}")
    # --ext picks the format of standard output; a file's name says everything itself.
    for option, value in (("--suffix", suffix), ("--ext", extension if output != STDIO else None)):
        if value:
            raise JobPlanError(f"{option} names files in an output folder; {output} names the output in full")
    if STDIO not in (source, output) and output.resolve() == source.resolve():
        raise JobPlanError(f"{source} would be overwritten by its own output; name another output file")


def _output_in(folder: Path, relative: Path, source: Path) -> Path:
    """Where `source` goes in the output folder; never outside it, never over the source itself."""
    output = folder / relative
    _check_inside(output, folder)
    if output.resolve() == source.resolve():
        raise JobPlanError(f"{source} would be overwritten by its own output; use --suffix or another folder")
    return output


def _done(job: Job) -> bool:
    """An output that is there and whole; an empty or cut-off one (a crash of another tool) is redone.

    Standard output is never done: it is written on every run.
    """
    return job.output != STDIO and job.output.exists() and is_complete_image(job.output)


def _read(job: Job, max_megapixels: float | None) -> LoadedImage:
    if job.source == STDIO:
        return decode_image(sys.stdin.buffer.read(), "standard input", max_megapixels=max_megapixels)
    return read_image(job.source, max_megapixels=max_megapixels)


def run_jobs(
    restorer: Restorer,
    jobs: list[Job],
    settings: TileSettings | None = None,
    *,
    overwrite: bool = False,
    force: bool = False,
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
    quality: int = DEFAULT_QUALITY,
    on_image: Callable[[Job], None] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> Iterator[JobResult]:
    """Restore each job's image and write it; yields one result per job (skipped ones first).

    The next image is decoded on a worker thread while the current one runs on the device, and
    the previous one is encoded and written on another (output_writer.py); results still come in
    job order. Without `overwrite`, an output that exists (or appears while its image runs) is
    left alone. `quality` applies to JPEG and WebP outputs.
    """
    for folder in dict.fromkeys(job.output.parent for job in jobs if job.output != STDIO):
        remove_stale_temporaries(folder)
    todo = [job for job in jobs if overwrite or not _done(job)]
    for job in jobs:
        if job not in todo:
            yield JobResult(job, "skipped", SKIP_MESSAGE)

    selected: tuple[str, Path | None] | None = None
    results: InOrder[JobResult] = InOrder()
    with ThreadPoolExecutor(max_workers=1) as reader, OutputWriter() as writer:
        pending: Future | None = reader.submit(_read, todo[0], max_megapixels) if todo else None
        for index, job in enumerate(todo):
            yield from results.ready()
            loaded_future, pending = pending, (reader.submit(_read, todo[index + 1], max_megapixels) if index + 1 < len(todo) else None)
            if not overwrite and _done(job):  # another run on the same folder wrote it meanwhile
                results.add(JobResult(job, "skipped", SKIP_MESSAGE))
                continue
            # An incomplete output is replaced; a new one never clobbers a file that appears meanwhile.
            replace_existing = overwrite or (job.output != STDIO and job.output.exists())
            if on_image:
                on_image(job)
            start = time.perf_counter()
            try:
                image = loaded_future.result()
                del loaded_future  # it holds the decoded image as well
                if selected != (job.task, job.adapter):
                    restorer.use(job.task, job.adapter, force=force)
                    selected = (job.task, job.adapter)
                input_size = image.rgb.shape[:2]
                stats, size, write = _restore(restorer, image, job, settings, on_tile, replace_existing, quality)
                # The decoded input goes before the file is encoded: the encoder copies the output.
                del image
            except Exception as error:  # one bad image must not stop the batch
                results.add(JobResult(job, "failed", _describe(error), RestoreStats(seconds=time.perf_counter() - start)))
                continue
            stats.seconds = time.perf_counter() - start
            finish = functools.partial(_written, job=job, stats=stats, input_size=input_size, size=size)
            results.add_future(writer.submit(functools.partial(_timed, write)), finish)
        yield from results.all()


def _timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _written(
    done: Future, *, job: Job, stats: RestoreStats, input_size: tuple[int, int], size: tuple[int, int]
) -> JobResult:
    """The result of a job whose output the writer thread has written (or failed to): reported as
    it was when the file was written in line, its seconds the restore's plus the writing's."""
    try:
        stats.seconds += done.result()
    except TargetExistsError:
        return JobResult(job, "skipped", "output written meanwhile by another run (use --overwrite)")
    except Exception as error:
        return JobResult(job, "failed", _describe(error), RestoreStats(seconds=stats.seconds))
    return JobResult(job, "ok", "", stats, input_size, size)


def _restore(
    restorer: Restorer, image: LoadedImage, job: Job, settings: TileSettings | None, on_tile, replace: bool,
    quality: int,
) -> tuple[RestoreStats, tuple[int, int], Callable[[], None]]:
    """Restore one image into the integer samples of its output; returns the stats, the output
    size and the function that writes the file (replacing an existing one only if `replace`) or
    standard output.

    Each tile's part is quantised on the device as soon as it is done, so an x4 result is held
    only as the integer samples that get written, never whole in float, and the host receives
    1 or 2 bytes per sample. Writing is left to the caller so that it can let go of the decoded
    input first.
    """
    alpha = image.alpha
    if alpha is not None and restorer.scale != 1:
        alpha = resize_alpha(alpha, restorer.scale)
    plan = plan_output(job.output, image, has_alpha=alpha is not None, quality=quality, extension=job.extension)
    height, width = (side * restorer.scale for side in image.rgb.shape[:2])
    samples = np.empty((height, width, plan.channels), plan.dtype)
    colour = plan.colour_channels

    def store(top: int, left: int, block: torch.Tensor) -> None:  # (h, w, colour) integer samples
        rows, cols = slice(top, top + block.shape[0]), slice(left, left + block.shape[1])
        samples[rows, cols, :colour] = block.numpy()
        if plan.alpha and alpha is not None:
            samples[rows, cols, colour:] = plan.alpha_samples(alpha[rows, cols])

    _, stats = restorer.restore(
        to_tensor(image.rgb), settings, on_tile, sink=store, quantize=lambda block: device_samples(block, plan)
    )
    stats.notes.extend(plan.notes)

    def write() -> None:
        if job.output == STDIO:
            sys.stdout.buffer.write(plan.encode(samples))
            sys.stdout.buffer.flush()
        else:
            plan.write(samples, replace=replace)

    return stats, (height, width), write


def _describe(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text if isinstance(error, (OSError, ValueError, RuntimeError)) else f"{type(error).__name__}: {text}"
