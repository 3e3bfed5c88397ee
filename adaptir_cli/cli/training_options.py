"""Options and error reporting shared by `adaptir finetune` and `adaptir pretrain`.

Both commands take the same data, loop, checkpoint and device flags; they are declared once here
and used as the defaults of both command functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.markup import escape

from adaptir_cli.cli import completion as complete
from adaptir_cli.cli.common import EXIT_USAGE, fail, print_json, split_hint, stderr
from adaptir_cli.training.data import default_workers
from adaptir_cli.training.loop import FINETUNE_DEFAULTS, LoopSettings, TrainingInterrupted, TrainResult
from adaptir_cli.training.schedule import SCHEDULES

EXIT_INTERRUPTED = 130
# Below this validation gain an adapter is not worth its file: say so at the end of the run.
MIN_GAIN_DB = 0.05

GT = typer.Option(
    ..., "--gt", help="Folder of clean (ground-truth) training images.", show_default=False, metavar="DIR",
)
EXCLUDE = typer.Option(
    None, "--exclude", help="Text file of image names to leave out (e.g. the Rain100L backgrounds of BSD400).",
    metavar="FILE",
)
VAL_GT = typer.Option(
    None, "--val-gt", help="Folder of validation ground truths (default: no validation).", metavar="DIR",
)
VAL_LQ = typer.Option(
    None, "--val-lq", help="Inputs of the --val-gt images (default: made by the degradation).", metavar="DIR",
)
VAL_FRACTION = typer.Option(
    0.0, "--val-fraction", min=0.0, max=0.99, help="Hold out this fraction of --gt for validation.", metavar="FRACTION",
)
# finetune validates by default: the end-of-run line compares the adapter with the bare base.
FINETUNE_VAL_FRACTION = typer.Option(
    None, "--val-fraction", min=0.0, max=0.99, show_default=False,
    help="Hold out this fraction of --gt for validation. Default: 10 %, at most 8 images (none with --val-gt).",
    metavar="FRACTION",
)
VAL_CROP = typer.Option(
    0, "--val-crop", min=0, help="Validate on centred crops of N input px (0: whole images).", metavar="N",
)
STEPS = typer.Option(FINETUNE_DEFAULTS["steps"], "--steps", min=1, help="Optimizer steps.", metavar="N")
BATCH = typer.Option(
    FINETUNE_DEFAULTS["batch"], "--batch", min=1,
    help="Samples per step, per process (torchrun: global batch = batch x processes).", metavar="N",
)
PATCH = typer.Option(
    FINETUNE_DEFAULTS["patch"], "--patch", min=1, help="Input crop side in px; the target crop is patch x scale.",
    metavar="N",
)
WEIGHT_DECAY = typer.Option(
    FINETUNE_DEFAULTS["weight_decay"], "--weight-decay", min=0.0, help="AdamW weight decay.", metavar="X",
)
SCHEDULE = typer.Option(
    FINETUNE_DEFAULTS["schedule"], "--schedule",
    help=f"Learning-rate schedule after the warm-up: {', '.join(SCHEDULES)}.", metavar="SCHEDULE",
)
WARMUP = typer.Option(
    None, "--warmup", min=0, help="Linear warm-up steps. Default: 5 % of --steps, at most 1000.", metavar="N",
)
GRAD_CLIP = typer.Option(
    FINETUNE_DEFAULTS["grad_clip"], "--grad-clip", min=0.0, help="Clip the gradient norm to this (0: no clipping).",
    metavar="NORM",
)
PHASE_LOSS_HELP = ("Weight of the phase loss beside L1: it stops the 2-pixel checkerboard a half-resolution "
                   "body leaves on flat areas (0: L1 alone).")
PHASE_LOSS = typer.Option(
    FINETUNE_DEFAULTS["phase_loss"], "--phase-loss", min=0.0, help=PHASE_LOSS_HELP, metavar="WEIGHT",
)
SEED = typer.Option(
    FINETUNE_DEFAULTS["seed"], "--seed", help="Seed of the initial weights, crops, augmentations and degradations.",
    metavar="N",
)
VAL_EVERY = typer.Option(
    FINETUNE_DEFAULTS["val_every"], "--val-every", min=0, help="Validate every N steps (0: at the end only).",
    metavar="N",
)
CHECKPOINT_EVERY = typer.Option(
    FINETUNE_DEFAULTS["checkpoint_every"], "--checkpoint-every", min=0,
    help="Save a checkpoint every N steps (0: only on Ctrl-C).", metavar="N",
)
RESUME = typer.Option(False, "--resume", help="Continue from the checkpoint beside --out (NAME.ckpt).")
DEVICE = typer.Option(
    "auto", "--device", help="auto, cpu or cuda (under torchrun: each process's GPU).", metavar="DEVICE",
    autocompletion=complete.devices,
)
PRECISION = typer.Option(
    FINETUNE_DEFAULTS["precision"], "--precision",
    help="auto (bf16 autocast on CUDA for bases verified in bf16, else fp32), fp32 or bf16.", metavar="PRECISION",
    autocompletion=complete.precisions,
)
WORKERS = typer.Option(
    default_workers(), "--workers", min=0, help="Threads that decode the images; with 1 or more, the next step's crops are also cut ahead (0: none).",
    metavar="N",
)
JSON_OUT = typer.Option(False, "--json", help="Print a machine-readable summary on stdout.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress display.")


def loop_settings(
    *, steps: int, batch: int, patch: int, lr: float, schedule: str, warmup: Optional[int], weight_decay: float,
    grad_clip: float, phase_loss: float, seed: int, val_every: int, checkpoint_every: int, precision: str,
    workers: int,
) -> LoopSettings:
    """The loop's settings from the command's flags; invalid combinations are usage errors."""
    try:
        return LoopSettings.from_options(
            steps=steps, batch=batch, patch=patch, lr=lr, schedule=schedule, warmup=warmup,
            weight_decay=weight_decay, grad_clip=grad_clip, phase_loss=phase_loss, seed=seed, val_every=val_every,
            checkpoint_every=checkpoint_every, precision=precision, workers=workers,
        )
    except ValueError as error:
        usage_failure(error)


def report_outcome(
    kind: str, written: Path, log: Path, result: TrainResult, *, quiet: bool, json_out: bool, **extra: Any
) -> None:
    """Say what a finished run wrote (stderr) and, with --json, summarise it on stdout."""
    final, start = result.final_validation or {}, result.start_validation or {}
    if not quiet:
        scores = ", ".join(f"{task} {metrics['psnr']:.2f} dB" for task, metrics in final.items())
        stderr.print(
            f"Wrote {written} ({result.trainable_parameters:,} trained parameters)"
            + (f"; validation {scores}" if scores and not start else ""), highlight=False, soft_wrap=True,
        )
        # An adapter against the bare base it started from (one task); a further stage of a base, per
        # head, against its start (where a head may lose a little for another's gain: no warning).
        stage = kind == "base"
        for task in sorted(final.keys() & start.keys()):
            before, after = start[task]["psnr"], final[task]["psnr"]
            stderr.print(
                f"{task + ' ' if stage else ''}validation PSNR: {'start' if stage else 'base'} {before:.2f} dB, "
                f"{kind} {after:.2f} dB ({after - before:+.2f})",
                highlight=False,
            )
            if not stage and after - before < MIN_GAIN_DB:
                stderr.print(
                    f"[yellow]Warning:[/] the {kind} does not beat the bare base on the validation images "
                    f"(by {MIN_GAIN_DB} dB or more).\n"
                    "[yellow]Hint:[/] train longer (--steps), try a wider adapter (--hidden 32) or another --lr, or give "
                    "more or more varied images.",
                    highlight=False, soft_wrap=True,
                )
    if json_out:
        print_json({
            kind: str(written), "log": str(log), **extra, "steps": result.steps, "seconds": result.history.seconds,
            "start_validation": start or None, "final_validation": final or None,
            "best_validation": result.history.best,
            "trainable_parameters": result.trainable_parameters,
        })


def usage_failure(error: BaseException) -> NoReturn:
    fail(*split_hint(error), code=EXIT_USAGE)


@contextmanager
def reported_training_errors() -> Iterator[None]:
    """Expected failures become `Error:` / `Hint:` lines and exit 1; an interruption exits 130."""
    try:
        yield
    except TrainingInterrupted as interrupted:
        stderr.print(
            f"[yellow]Interrupted after step {interrupted.step}.[/] Checkpoint: {escape(str(interrupted.checkpoint))}\n"
            "Run the same command with --resume to continue.",
            highlight=False, soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (OSError, ValueError, KeyError) as error:  # data, weights, adapter and resume errors
        fail(*split_hint(error))
