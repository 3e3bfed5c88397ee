"""adaptir as a library: what the commands do, callable from Python with the same defaults.

`adaptir restore`, `bench` and `finetune` resolve "no --base" and "no --adapter" here, so a
script gets exactly what the command line gets:

    from adaptir_cli import api

    restored = api.restore_array(rgb, "sr4")                 # EMT x4, shipped in the package
    results = api.restore_files(["photos/"], "out/", "derain")
    api.choose_task(rgb).task                                # what "auto" would run: "derain", ...
    api.finetune("lowlight", gt="clean/", out="lowlight.safetensors", steps=300)

Lower-level pieces stay importable (`adaptir_cli.restorer.Restorer`, `adaptir_cli.bench`,
`adaptir_cli.training`) for code that needs their knobs; docs/library.md has a runnable example.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from adaptir_cli.auto_task import AutoChoice, choose_tasks, classify
from adaptir_cli.bases.model import LoadedBase
from adaptir_cli.distributed import Distributed, barrier, gather, joined, share
from adaptir_cli.file_jobs import Job, JobResult, plan_jobs, run_jobs
from adaptir_cli.imaging.formats import DEFAULT_QUALITY
from adaptir_cli.imaging.tensors import to_numpy, to_tensor
from adaptir_cli.restorer import Restorer, TileSettings
from adaptir_cli.tasks import AUTO
from adaptir_cli.weights.resolve import adapter_file, base_for, default_adapter, load_base

__all__ = [
    "Restorers", "adapter_file", "base_for", "choose_task", "default_adapter", "finetune", "load_base",
    "restore_array", "restore_files",
]


def choose_task(rgb: np.ndarray) -> AutoChoice:
    """The task `--task auto` picks for one float32 RGB image (H, W, 3) in [0, 1], with the
    class the classifier saw and its probabilities (docs/auto-task.md)."""
    return classify(np.asarray(rgb, dtype=np.float32))


class Restorers:
    """One Restorer per base, each loaded on first use: a run whose tasks need different bases
    (sr4 on EMT, derain on CompactIR) loads every base once.

    `base` (a name or a file) serves every task when given; otherwise each task gets its default
    base from the manifest's [defaults] table.
    """

    def __init__(self, base: str | Path | None = None, *, device: str = "auto", precision: str = "auto") -> None:
        self.base, self.device, self.precision = base, device, precision
        self.loaded: dict[str, Restorer] = {}

    def base_name(self, task: str) -> str:
        """The base that serves `task` (a manifest name or the file given as `base`)."""
        return str(base_for(task, self.base))

    def for_task(self, task: str) -> Restorer:
        name = self.base_name(task)
        if name not in self.loaded:
            self.loaded[name] = Restorer(load_base(name), device=self.device, precision=self.precision)
        return self.loaded[name]

    def adapter(self, task: str, adapter: str | Path | None = None) -> Path | None:
        """`adapter` (a name from `adaptir models list` or a file), else the one shipped for the task's base."""
        if adapter is not None:
            return adapter_file(adapter) if str(adapter) else None
        return default_adapter(self.for_task(task).base, task)

    def select(self, task: str, adapter: str | Path | None = None, *, force: bool = False) -> Restorer:
        """The task's restorer with the task and its adapter selected, ready to restore."""
        restorer = self.for_task(task)
        restorer.use(task, self.adapter(task, adapter), force=force)
        return restorer


def restore_array(
    rgb: np.ndarray,
    task: str,
    *,
    base: str | Path | None = None,
    adapter: str | Path | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    device: str = "auto",
    restorers: Restorers | None = None,
) -> np.ndarray:
    """Restore one float32 RGB image (H, W, 3) in [0, 1]; returns float32 (sH, sW, 3) in [0, 1].

    `task` "auto" lets the classifier pick it (`choose_task`). Pass the same `restorers` to many
    calls to load each base only once.
    """
    if task == AUTO:
        task = choose_task(rgb).task
    restorers = restorers or Restorers(base, device=device)
    restorer = restorers.select(task, adapter)
    output, _ = restorer.restore(to_tensor(np.asarray(rgb, dtype=np.float32)), TileSettings(tile=tile, overlap=overlap))
    return to_numpy(output)


def plan_restore(
    jobs: Sequence[Job], restorers: Restorers, *, use_defaults: bool = True
) -> list[tuple[Restorer, list[Job]]]:
    """Group jobs by the base their task needs (loading each once) and fill in the shipped adapters.

    `use_defaults=False` keeps each job's adapter as given (None: the bare base).
    """
    groups: dict[int, tuple[Restorer, list[Job]]] = {}
    for job in jobs:
        restorer = restorers.for_task(job.task)
        if use_defaults and job.adapter is None:
            job = replace(job, adapter=restorers.adapter(job.task))
        groups.setdefault(id(restorer), (restorer, []))[1].append(job)
    return list(groups.values())


def check_plan(groups: Sequence[tuple[Restorer, list[Job]]], settings: TileSettings, *, force: bool = False) -> None:
    """Refuse, before the first image, what no image could run with: tile settings a base cannot
    take (TileSettingsError) and every task/adapter pair that does not fit its base."""
    for restorer, group in groups:
        restorer.tile_settings(settings)
        for pair in dict.fromkeys((job.task, job.adapter) for job in group):
            restorer.use(*pair, force=force)


def shares(groups: Sequence[tuple[Restorer, list[Job]]], context: Distributed) -> list[tuple[Restorer, list[Job]]]:
    """This process's share of each base's jobs: every process planned all of them, in the same order,
    so the shares are disjoint and every image is written exactly once."""
    return [(restorer, share(jobs, context)) for restorer, jobs in groups]


def gather_results(mine: list[JobResult], jobs: Sequence[Job], context: Distributed) -> list[JobResult]:
    """Every process's results, in the order of `jobs` (each process's own alone)."""
    order = {job.output: index for index, job in enumerate(jobs)}
    return sorted((r for part in gather(mine, context) for r in part), key=lambda result: order[result.job.output])


def restore_files(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    task: str,
    *,
    base: str | Path | None = None,
    adapter: str | Path | None = None,
    recursive: bool = False,
    suffix: str = "",
    ext: str | None = None,
    overwrite: bool = False,
    settings: TileSettings | None = None,
    device: str = "auto",
    quality: int = DEFAULT_QUALITY,
) -> list[JobResult]:
    """Restore files and folders into `output_dir` as `adaptir restore` does; one result per image.

    As there, `output_dir` may name the image file written for one input file, and `task` "auto"
    picks each image's task (an unreadable image then fails before any base loads). Settings that
    no image could run with raise before the first image (ValueError, RestoreError). Under
    torchrun each process restores its share and every process returns all the results; a process
    group the call joined is left when it returns (one the caller set up is kept).
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be between 1 and 100, not {quality}")
    settings = settings or TileSettings()
    adapters = [adapter_file(adapter) if str(adapter) else None] if adapter is not None else None
    jobs = plan_jobs([Path(p) for p in inputs], Path(output_dir), [task], adapters, recursive=recursive,
                     suffix=suffix, ext=ext)
    with joined(device) as context:
        jobs, _, unreadable = choose_tasks(jobs, context=context)
        groups = plan_restore(jobs, Restorers(base, device=str(context.device)), use_defaults=adapter is None)
        check_plan(groups, settings)
        mine = [
            result
            for restorer, group in shares(groups, context)
            for result in run_jobs(restorer, group, settings, overwrite=overwrite, quality=quality)
        ]
        barrier(context)
        return unreadable + gather_results(mine, jobs, context)


def finetune(
    task: str,
    *,
    gt: str | Path,
    out: str | Path,
    base: str | Path | LoadedBase | None = None,
    lq: str | Path | None = None,
    method: str = "adaptir",
    device: str = "auto",
    val_fraction: float | None = None,
    **loop: Any,
) -> Path:
    """Train an adapter for `task` on `base` (default: the task's base) and return the file written.

    `loop` takes the loop settings of `adaptir finetune` by name (steps, batch, patch, lr, ...).
    As the command, it holds out a tenth of `gt` (at most 8 images) for validation unless
    `val_fraction` says otherwise (0: none).
    """
    from adaptir_cli.training.data import DataOptions
    from adaptir_cli.training.finetune import finetune as run
    from adaptir_cli.training.loop import LoopSettings

    data = DataOptions(gt=Path(gt), lq=None if lq is None else Path(lq), val_fraction=val_fraction)
    target = base if isinstance(base, LoadedBase) else base_for(task, base)
    outcome = run(target, task, Path(out), data, LoopSettings.from_options(**loop), method=method, device=device,
                  show_progress=False)
    return outcome.output

