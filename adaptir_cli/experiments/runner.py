"""Running an experiment: train every run, benchmark them all with the bench protocol, record each.

1. Training, in run-file order, with the library behind `adaptir finetune` (adapters, and the
   whole base for "full"), into `outputs/<run>.safetensors`. A finished output is reused (its
   metadata holds the training summary, and so the training time) unless `force`; one trained
   with other settings is refused rather than silently reported under the new ones. An
   interrupted run's checkpoint is resumed.
2. One bench pass on the one loaded base for every adapter run and the "none" runs (the bare
   base), one column each, so all of them see exactly the same inputs; one more pass per "full"
   run with its tuned base. Same protocol, degradation seeds and whole-image inference as
   `adaptir bench`.
3. `results/<run>.json` per run (experiments/results.py).
"""

from __future__ import annotations

import copy
import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors import safe_open

from adaptir_cli import __version__
from adaptir_cli.adapters import get_method, read_adapter
from adaptir_cli.bases import load_base_file
from adaptir_cli.bases.loading import sha256_file
from adaptir_cli.bases.model import LoadedBase
from adaptir_cli.bench.protocol import CHANNELS, Protocol, make_protocol
from adaptir_cli.bench.runner import BenchResult, DatasetResult, Contender, check_dataset, run_benchmark
from adaptir_cli.data.datasets import Dataset, DatasetError, find_dataset
from adaptir_cli.data.degradations import Degradation
from adaptir_cli.experiments.config import Experiment, ExperimentError, Run
from adaptir_cli.experiments.results import number, write_results
from adaptir_cli.restorer import Restorer, TileSettings
from adaptir_cli.training.checkpoint import checkpoint_path, log_path
from adaptir_cli.training.data import DataError
from adaptir_cli.training.finetune import FULL, finetune
from adaptir_cli.training.inputs import check_head
from adaptir_cli.training.loop import LoopSettings
from adaptir_cli.training.base_file import TRAINING_METADATA_KEY

# The bench protocol's inference: whole images (tile 0), as papers and `adaptir bench` do.
BENCH_TILES = TileSettings(tile=0)
# Summary fields an existing output must share with the run's settings to be reused.
_REUSE_KEYS = ("steps", "global_batch", "patch", "lr", "schedule", "seed")


@dataclass(frozen=True)
class Training:
    """What training a run cost and reached, read back from its output file (and log)."""

    summary: dict[str, Any]
    final_loss: float | None
    reused: bool  # the output existed and was not retrained

    def to_json(self) -> dict[str, Any]:
        seconds = float(self.summary.get("seconds") or 0.0)
        steps = int(self.summary.get("steps") or 0)
        environment = self.summary.get("environment") or {}
        return {
            "seconds": seconds, "steps": steps, "steps_per_second": steps / seconds if seconds > 0 else None,
            "final_loss": number(self.final_loss), "reused": self.reused,
            **{key: self.summary.get(key) for key in ("batch", "global_batch", "patch", "lr", "schedule", "seed")},
            "device": environment.get("device"), "gpu": environment.get("gpu"),
            "precision": environment.get("precision"), "processes": environment.get("processes"),
            "versions": {key: environment.get(key) for key in ("adaptir", "torch", "python")},
            "final_validation": self.summary.get("final_validation"),
        }


Say = Callable[..., None]  # console.print, or nothing with show_progress=False


def run_experiment(
    experiment: Experiment,
    *,
    only: list[str] | None = None,
    force: bool = False,
    device: str = "auto",
    console: Console | None = None,
    show_progress: bool = True,
) -> list[Path]:
    """Train (or reuse), benchmark and record the runs of `experiment` (those named in `only`).

    Returns the results files written. Data sets and the base are checked before anything trains.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ExperimentError("adaptir experiment runs in one process; start it without torchrun")
    console = console or Console(stderr=True)
    say = console.print if show_progress else (lambda *args, **kwargs: None)
    runs = experiment.select(only or [])
    protocol, degradation = make_protocol(experiment.task, experiment.bench.get("sigma"), experiment.bench.get("seed", 0))
    try:
        sets = [find_dataset(name, experiment.bench_data()) for name in experiment.datasets()]
        for found in sets:
            check_dataset(found, protocol)
    except DatasetError as error:
        raise ExperimentError(
            f"{experiment.file}: [bench] {error}\nHint: in the experiment, [bench] data names the folder holding "
            "the test sets, and datasets may list folders (relative to the experiment folder)."
        ) from None
    from adaptir_cli.weights.resolve import load_base

    base = load_base(experiment.base_source())
    try:
        check_head(base, experiment.task)
    except DataError as error:
        raise ExperimentError(str(error)) from None
    if any(run.trains for run in runs):
        _check_data(experiment)
    parameters = sum(p.numel() for p in base.module.parameters())  # before the bench injects adapters

    trained: dict[str, Training] = {}
    for index, run in enumerate(runs, 1):
        if run.trains:
            say(f"[bold]Run {index}/{len(runs)}[/] {escape(f'{run.name} ({run.label}): {run.method}')}", highlight=False)
            trained[run.name] = _train(experiment, run, base, force, device, console, show_progress, say)

    scored: dict[str, BenchResult] = {}  # run name -> the bench pass it is a column of (labelled by the run name)
    on_base = [run for run in runs if run.method != FULL]
    if on_base:
        say(escape(f"Benchmarking {', '.join(run.name for run in on_base)} on {base.name}"), highlight=False)
        result = _bench(base, on_base, experiment, sets, protocol, degradation, device, console, show_progress)
        scored.update({run.name: result for run in on_base})
    for run in runs:
        if run.method == FULL:
            tuned = _tuned_base(_output(experiment, run), base)
            say(escape(f"Benchmarking {run.name} (tuned base)"), highlight=False)
            result = _bench(tuned, [run], experiment, sets, protocol, degradation, device, console, show_progress)
            scored[run.name] = result

    written = []
    for run in runs:
        payload = _results(experiment, run, base, parameters, trained.get(run.name), scored[run.name], protocol)
        written.append(write_results(experiment.results / f"{run.name}.json", payload))
    return written


def _check_data(experiment: Experiment) -> None:
    """Missing data folders now, not after the first runs have trained."""
    data = experiment.data_options()
    for key in ("gt", "lq", "val_gt", "val_lq", "exclude"):
        path = getattr(data, key)
        if path is not None and not path.exists():
            raise ExperimentError(f"{experiment.file}: [data] {key} {path} not found\nHint: check the path (relative "
                                  "paths are relative to the experiment folder) or --shared.")


def _output(experiment: Experiment, run: Run) -> Path:
    return experiment.outputs / f"{run.name}.safetensors"


# --- training ------------------------------------------------------------------------------------


def _train(
    experiment: Experiment, run: Run, base: LoadedBase, force: bool, device: str, console: Console, show_progress: bool,
    say: Say,
) -> Training:
    out = _output(experiment, run)
    settings = experiment.loop_settings(run)
    checkpoint = checkpoint_path(out)
    if force:
        for stale in (out, checkpoint, log_path(out)):
            stale.unlink(missing_ok=True)
    elif out.is_file():
        summary = _summary(run, out)
        _check_reusable(run, out, summary, base, experiment.task, settings)
        say(escape(f"  reusing {out} (trained before; --force retrains)"), highlight=False)
        return Training(summary, _final_loss(out), reused=True)
    resume = checkpoint.is_file()  # an interrupted run continues (the loop checks it is the same run)
    if resume:
        say(escape(f"  resuming from {checkpoint}"), highlight=False)
    # A copy: training injects adapters into (or changes) the module, and the bench needs the original.
    fresh = copy.deepcopy(base)
    data = experiment.data_options()
    finetune(fresh, experiment.task, out, data, settings, method=run.method, config=run.config, device=device,
             resume=resume, console=console, show_progress=show_progress)
    return Training(_summary(run, out), _final_loss(out), reused=False)


def _summary(run: Run, out: Path) -> dict[str, Any]:
    """The training summary stored in an output's metadata (adapter or base file)."""
    try:
        if run.method == FULL:
            with safe_open(str(out), framework="pt") as handle:
                text = (handle.metadata() or {}).get(TRAINING_METADATA_KEY)
            summary = json.loads(text) if text else None
        else:
            summary = read_adapter(out).training
    except Exception as error:  # a truncated or foreign file: whatever the reader raised
        raise ExperimentError(f"{out}: cannot read it back ({error})\nHint: delete it or rerun with --force.") from None
    if not summary:
        raise ExperimentError(f"{out} holds no training summary\nHint: delete it or rerun with --force.")
    return summary


def _check_reusable(
    run: Run, out: Path, summary: dict[str, Any], base: LoadedBase, task: str, settings: LoopSettings
) -> None:
    """Refuse an output trained for other settings: its numbers would be reported under these."""
    expected = {**settings.identity(1), "schedule": settings.schedule.to_json()}
    differences = [
        f"{key}: {summary.get(key)!r} in the file, {expected[key]!r} now"
        for key in _REUSE_KEYS if _normal(summary.get(key)) != _normal(expected[key])
    ]
    if run.method == FULL:
        origin = summary.get("tuned_from") or {}
        if origin.get("sha256") != base.sha256:
            differences.append(f"base: tuned from sha256 {str(origin.get('sha256'))[:12]}..., now {base.sha256[:12]}...")
        if summary.get("task") != task:
            differences.append(f"task: {summary.get('task')!r} in the file, {task!r} now")
    else:
        adapter = read_adapter(out)
        now = get_method(run.method).config_to_dict(run.config)
        if adapter.method != run.method or get_method(adapter.method).config_to_dict(adapter.config) != now:
            differences.append(f"method: {adapter.method} {get_method(adapter.method).config_to_dict(adapter.config)} "
                               f"in the file, {run.method} {now} now")
        if adapter.base_sha256 != base.sha256:
            differences.append(f"base: sha256 {adapter.base_sha256[:12]}... in the file, {base.sha256[:12]}... now")
        if adapter.task != task:
            differences.append(f"task: {adapter.task!r} in the file, {task!r} now")
    if differences:
        raise ExperimentError(
            f"{out} was trained with other settings than {run.file.name} now asks for:\n  " + "\n  ".join(differences)
            + f"\nHint: rerun with --force --only {run.name} to retrain it."
        )


def _normal(value: Any) -> Any:
    """JSON round trip: tuples become lists, as they are in the stored summary."""
    return json.loads(json.dumps(value))


def _final_loss(out: Path) -> float | None:
    """The last step's loss from the run's log beside the output (None if the log is gone)."""
    try:
        losses = json.loads(log_path(out).read_text(encoding="utf-8"))["history"]["losses"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(losses[-1]) if losses else None


# --- benchmarking --------------------------------------------------------------------------------


def _tuned_base(path: Path, original: LoadedBase) -> LoadedBase:
    if not path.is_file():
        raise ExperimentError(f"tuned base {path} not found\nHint: rerun without --only, or with --force.")
    tuned = load_base_file(path, name=f"{original.name}+{path.stem}")
    # Manifest entries may rename a file's heads (IPT's per-task files); read back from the tuned
    # file they would have the file's own names again, so they get the original's.
    if sorted(h.index for h in tuned.descriptor.heads.values()) == sorted(h.index for h in original.descriptor.heads.values()):
        tuned.descriptor = replace(tuned.descriptor, heads=dict(original.descriptor.heads))
    return tuned


def _bench(
    base: LoadedBase, runs: list[Run], experiment: Experiment, sets: list[Dataset], protocol: Protocol,
    degradation: Degradation, device: str, console: Console, show_progress: bool,
) -> BenchResult:
    restorer = Restorer(base, device=device)
    methods = []
    for run in runs:
        if run.is_adapter:
            path = _output(experiment, run)
            methods.append(Contender(run.name, "adapter", read_adapter(path), path, sha256_file(path)))
        else:
            methods.append(Contender(run.name, "base"))
    for method in methods:  # every mismatch before the first image, not once per image
        try:
            method.select(restorer, protocol.task)
        except Exception as error:
            raise ExperimentError(f"{method.label} cannot run on {base.name}: {error}") from None
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=not show_progress,
    )
    with progress:
        bar = progress.add_task("images", total=sum(len(s.images) for s in sets))

        def on_image(dataset: str, image: str, failures: list) -> None:
            progress.update(bar, advance=1, description=f"{dataset} {image}")
            for failure in failures:
                where = f" ({failure.method})" if failure.method else ""
                progress.console.print(f"[red]failed[/] {escape(f'{dataset}/{failure.image}{where}: {failure.error}')}",
                                       highlight=False)

        result = run_benchmark(sets, protocol, degradation, methods, restorer, BENCH_TILES, on_image=on_image)
    base.module.to("cpu")  # the next pass may load another base onto the device
    return result


# --- results -------------------------------------------------------------------------------------


def _results(
    experiment: Experiment, run: Run, base: LoadedBase, base_parameters: int, training: Training | None,
    result: BenchResult, protocol: Protocol,
) -> dict[str, Any]:
    out = _output(experiment, run) if run.trains else None
    settings = experiment.loop_settings(run) if run.trains else None
    trained = training.to_json() if training is not None else None
    return {
        "experiment": experiment.name,
        "description": experiment.description,
        "run": run.name,
        "label": run.label,
        "method": run.method,
        "method_config": get_method(run.method).config_to_dict(run.config) if run.is_adapter else {},
        "config": experiment.merged(run),
        "settings": settings.to_json() if settings is not None else None,
        "task": experiment.task,
        "base": {"name": base.name, "sha256": base.sha256, "architecture": base.descriptor.architecture,
                 "parameters": base_parameters},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"adaptir": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "device": trained["device"] if trained else result.info.device,
        "trainable_parameters": int((training.summary.get("trainable_parameters") or 0) if training else 0),
        "file_bytes": out.stat().st_size if out is not None else None,
        "output": f"outputs/{out.name}" if out is not None else None,
        "output_sha256": sha256_file(out) if out is not None else None,
        "training": trained,
        "bench": {
            "device": result.info.device, "precision": result.info.precision, "tile": result.info.tile,
            # The benched base by identity, not by where it lay on this machine.
            "base": {key: value for key, value in (result.info.base or {}).items() if key != "source"},
            "protocol": protocol.to_json(), "versions": result.info.versions,
        },
        "datasets": [_dataset_json(dataset, run.name, protocol) for dataset in result.datasets],
    }


def _dataset_json(dataset: DatasetResult, label: str, protocol: Protocol) -> dict[str, Any]:
    column = next(r for r in dataset.results if r.method.label == label)
    return {
        "name": dataset.name,
        "images": dataset.images,
        "images_scored": len(column.scores),
        "failures": [f.image for f in dataset.failures if f.method in (label, None)],
        "channel": protocol.channel,
        "crop": protocol.crop,
        "psnr": {c: number(column.psnr(c)) for c in CHANNELS},
        "ssim": {c: number(column.ssim(c)) for c in CHANNELS},
        "notes": dataset.notes,
    }
