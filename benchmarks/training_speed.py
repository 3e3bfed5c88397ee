"""Training speed (results go to docs/performance.md): finetune steps/s, and pre-training against
another revision of the library, side by side in one run.

    # finetune: the real loop (sampling, degradation, forward, backward, AdamW) for one base
    python benchmarks/training_speed.py finetune --base compactir-default --task lr4-noise30 --gt ../shared/data/train/BSD400

    # pretrain: experiments/default/train.sh's settings, this tree and REV, plus the model's own step
    python benchmarks/training_speed.py pretrain --gt ../shared/data/train/BSD400 --against 4274f44

    # curves: 1,000 pre-training steps' losses, this tree and REV (and REV with another seed:
    # the run-to-run noise the comparison is read against)
    python benchmarks/training_speed.py curves --gt ../shared/data/train/BSD400 --against 4274f44 --steps 1000

`--against REV` exports REV's `adaptir_cli` with `git archive` and runs the same measurement
on it in a child process, one after the other on the same machine. The measurements use only
API that REV has too (`pretrain`, `LoopSettings`, `Schedule`, `DataOptions`). The first steps
are warm-up; a rate is the median over the timed steps. Prints (and with --out writes) JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
# experiments/default/train.sh's pre-training settings (the shipped default base).
PRETRAIN_TASKS = ("sr2", "sr3", "sr4", "denoise", "derain")
PRETRAIN_SIZES = {"dim": 48, "blocks": 8, "heads": 3, "window": 8, "mlp_ratio": 2}


def _stamped(train: Callable[[Path, Callable[[int], None]], Any]) -> tuple[list[float], Any]:
    """Run `train(out, on_step)` writing into a scratch folder: the step end times and its outcome."""
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        outcome = train(Path(folder) / "speed.safetensors", lambda done: stamps.append(time.perf_counter()))
    return stamps, outcome


def _settings(steps: int, lr: float, **options: Any) -> Any:
    """Loop settings of a timed run: a cosine schedule over `steps` with no warm-up."""
    from adaptir_cli.training.loop import LoopSettings
    from adaptir_cli.training.schedule import Schedule

    return LoopSettings(steps=steps, lr=lr, schedule=Schedule("cosine", steps, 0), **options)


def _stamped_pretrain(args: argparse.Namespace, steps: int, seed: int) -> tuple[list[float], list[float]]:
    """Step end times and losses of a pre-training run of `steps` steps (this process's library)."""
    from adaptir_cli.training.data import DataOptions
    from adaptir_cli.training.pretrain import compactir_config, pretrain

    settings = _settings(steps, 5e-4, batch=args.batch, patch=args.patch, seed=seed, workers=args.workers)
    stamps, outcome = _stamped(lambda out, on_step: pretrain(
        compactir_config(list(PRETRAIN_TASKS), **PRETRAIN_SIZES), out, DataOptions(gt=args.gt, exclude=args.exclude),
        settings, device="cpu", show_progress=False, on_step=on_step,
    ))
    return stamps, list(outcome.result.history.losses)


def _median_step(stamps: list[float], warmup: int) -> float:
    return statistics.median(later - earlier for earlier, later in zip(stamps[warmup - 1 :], stamps[warmup:]))


def model_step(args: argparse.Namespace) -> dict[str, float]:
    """The model's own forward + backward + AdamW step on random batches of the same shapes, per head."""
    from adaptir_cli.bases.compactir import build_compactir
    from adaptir_cli.training.pretrain import compactir_config

    torch.manual_seed(0)
    config = compactir_config(list(PRETRAIN_TASKS), **PRETRAIN_SIZES)
    model = build_compactir(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    seconds = {}
    for head, (name, scale) in enumerate(config.tasks):
        lq = torch.rand(args.batch, 3, args.patch, args.patch)
        gt = torch.rand(args.batch, 3, args.patch * scale, args.patch * scale)
        times = []
        for _ in range(args.warmup + args.steps):
            start = time.perf_counter()
            loss = F.l1_loss(model(lq, head), gt)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        seconds[name] = statistics.median(times[args.warmup :])
    return seconds


def measure_pretrain(args: argparse.Namespace) -> dict:
    stamps, _ = _stamped_pretrain(args, args.warmup + args.steps, seed=0)
    return {"step_seconds": _median_step(stamps, args.warmup)}


def measure_curves(args: argparse.Namespace) -> dict:
    return {f"seed{seed}": _stamped_pretrain(args, args.steps, seed)[1] for seed in args.seeds}


def _environment() -> dict:
    return {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "load_average": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _at_revision(revision: str, argv: list[str]) -> dict:
    """Run this script's `argv` measurement in a child process on REV's library."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "adaptir_cli"], check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as folder:
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(folder, filter="data")
        # The manifest and bundled files live beside the package in a checkout.
        (Path(folder) / "weights_manifest.toml").write_bytes(
            subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:weights_manifest.toml"],
                           check=True, capture_output=True).stdout
        )
        env = {**os.environ, "PYTHONPATH": folder}
        child = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--here-only"], env=env, check=True,
                               capture_output=True, text=True, cwd=folder)
    return json.loads(child.stdout)


def _smoothed(losses: list[float], window: int) -> list[float]:
    return [round(statistics.fmean(losses[i : i + window]), 5) for i in range(0, len(losses), window)]


def run(args: argparse.Namespace) -> dict:
    if args.command == "finetune":
        return measure_finetune(args)
    measure = measure_pretrain if args.command == "pretrain" else measure_curves
    here = measure(args)
    if args.here_only:
        return here
    result: dict = {"settings": {k: str(v) for k, v in vars(args).items() if k not in ("out", "here_only")},
                    "environment": _environment(), "this_tree": here}
    if args.command == "pretrain":
        result["model_step_seconds"] = model_step(args)
        model_mean = statistics.fmean(result["model_step_seconds"].values())
        result["model_step_mean_seconds"] = model_mean
        result["this_tree"]["over_model_step"] = here["step_seconds"] / model_mean
    if args.against:
        passthrough = [args.command, "--gt", str(args.gt.resolve()), "--batch", str(args.batch), "--patch", str(args.patch),
                       "--steps", str(args.steps), "--warmup", str(args.warmup), "--workers", str(args.workers)]
        if args.exclude:
            passthrough += ["--exclude", str(args.exclude.resolve())]
        if args.command == "curves":
            passthrough += ["--seeds", *map(str, args.seeds)]
        result["against"] = {"revision": args.against, **_at_revision(args.against, passthrough)}
        if args.command == "pretrain":
            result["speedup"] = result["against"]["step_seconds"] / here["step_seconds"]
    if args.command == "curves":
        for run_ in [result["this_tree"], result.get("against", {})]:
            for key in [k for k in run_ if k.startswith("seed")]:
                run_[key.replace("seed", "smoothed_seed")] = _smoothed(run_[key], args.window)
    return result


def measure_finetune(args: argparse.Namespace) -> dict:
    from adaptir_cli.training.data import DataOptions
    from adaptir_cli.training.finetune import finetune

    settings = _settings(
        args.warmup + args.steps, 1e-4, batch=args.batch, patch=args.patch, val_every=0, checkpoint_every=0,
        precision=args.precision, workers=args.workers,
    )
    stamps, outcome = _stamped(lambda out, on_step: finetune(
        args.base, args.task, out, DataOptions(gt=args.gt), settings, method=args.method, device=args.device,
        show_progress=False, on_step=on_step,
    ))
    return {
        "base": str(args.base), "task": args.task, "method": args.method, "batch": args.batch, "patch": args.patch,
        "trainable_parameters": outcome.result.trainable_parameters,
        "timed_steps": args.steps, "steps_per_second": round(1.0 / _median_step(stamps, args.warmup), 3),
        "environment": outcome.result.summary(settings)["environment"], **_environment(),
    }


def _common(parser: argparse.ArgumentParser, batch: int, patch: int, steps: int) -> None:
    parser.add_argument("--gt", type=Path, required=True, help="clean training images (BSD400)")
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--patch", type=int, default=patch)
    parser.add_argument("--steps", type=int, default=steps, help="timed steps (curves: steps per run)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the JSON here")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    tune = commands.add_parser("finetune", help="finetune steps/s on one base")
    tune.add_argument("--base", required=True)
    tune.add_argument("--task", default="lr4-noise30")
    tune.add_argument("--method", default="adaptir")
    tune.add_argument("--device", default="cpu")
    tune.add_argument("--precision", default="auto")
    _common(tune, batch=16, patch=48, steps=10)
    for name, steps in (("pretrain", 40), ("curves", 1000)):
        sub = commands.add_parser(name, help=f"{name}: this tree (and --against REV)")
        sub.add_argument("--against", metavar="REV", help="a git revision to measure side by side")
        sub.add_argument("--exclude", type=Path, default=REPO / "experiments/default/rain100l_backgrounds.txt")
        sub.add_argument("--here-only", action="store_true", help=argparse.SUPPRESS)
        if name == "curves":
            sub.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
            sub.add_argument("--window", type=int, default=100, help="steps per point of the smoothed curve")
        _common(sub, batch=8, patch=32, steps=steps)
    args = parser.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2)
    if getattr(args, "out", None):
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
