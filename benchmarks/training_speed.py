"""Training speed of `adaptir finetune` (steps per second; results go to docs/performance.md).

    python benchmarks/training_speed.py --base compactir-default --task lr4-noise30 --gt ../shared/data/train/BSD400
    python benchmarks/training_speed.py --base ../shared/weights/EMT_LSR_x4.pth --task lr4-noise30 --gt ...

The real training loop (data sampling, degradation on the fly, forward, backward, AdamW), as the
command runs it. The first steps are warm-up and are not timed; the rate is the median over the
timed steps. Prints one JSON object. The paper's reference: 5.9 steps/s for IPT + AdaptIR, batch
16, 48 x 48 inputs, fp32, one H100.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from adaptir_cli.training.data import DataOptions
from adaptir_cli.training.finetune import finetune
from adaptir_cli.training.loop import LoopSettings
from adaptir_cli.training.schedule import Schedule


def measure(args: argparse.Namespace) -> dict:
    stamps: list[float] = []
    steps = args.warmup + args.steps
    settings = LoopSettings(
        steps=steps, batch=args.batch, patch=args.patch, lr=1e-4, schedule=Schedule("cosine", steps, 0),
        val_every=0, checkpoint_every=0, precision=args.precision, workers=args.workers,
    )
    with tempfile.TemporaryDirectory() as folder:
        outcome = finetune(
            args.base, args.task, Path(folder) / "speed.safetensors", DataOptions(gt=args.gt), settings,
            method=args.method, device=args.device, show_progress=False,
            on_step=lambda done: stamps.append(time.perf_counter()),
        )
    timed = [later - earlier for earlier, later in zip(stamps[args.warmup - 1 :], stamps[args.warmup :])]
    environment = outcome.result.summary(settings)["environment"]
    return {
        "base": str(args.base), "task": args.task, "method": args.method, "batch": args.batch, "patch": args.patch,
        "trainable_parameters": outcome.result.trainable_parameters,
        "timed_steps": len(timed), "steps_per_second": round(1.0 / statistics.median(timed), 3),
        "environment": environment, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True)
    parser.add_argument("--task", default="lr4-noise30")
    parser.add_argument("--gt", type=Path, required=True, help="clean training images (BSD400)")
    parser.add_argument("--method", default="adaptir")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--workers", type=int, default=1)
    print(json.dumps(measure(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
