"""`adaptir pretrain` (advanced): train a whole multi-task base from scratch (work in adaptir_cli.training)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from adaptir_cli.cli import training_options as opt
from adaptir_cli.bases.compactir import DEFAULT_TASKS as COMPACTIR_TASKS
from adaptir_cli.cli.common import stderr
from adaptir_cli.training.data import DataOptions
from adaptir_cli.training.loop import PRETRAIN_LR
from adaptir_cli.training.pretrain import ARCHITECTURES, compactir_config, init_config, load_init
from adaptir_cli.training.pretrain import pretrain as run_pretrain

# The shipped default base's tasks (issue 4).
DEFAULT_TASKS = ",".join(name for name, _ in COMPACTIR_TASKS)

EXAMPLES = f"""
Advanced: most users fine-tune adapters on a shipped base (`adaptir finetune`) instead.

Examples:

  adaptir pretrain --gt BSD400/ --exclude rain100l_backgrounds.txt --val-fraction 0.05 --out base.safetensors

  adaptir pretrain --gt BSD400/ --tasks sr4,denoise --dim 32 --blocks 4 --steps 2000 --out small.safetensors

  adaptir pretrain --gt BSD400/ --tasks denoise,derain --refine 16 --grey-share 0.25 --out x1.safetensors

  adaptir pretrain --gt BSD400/ --tasks denoise,derain=derain-varied --out x1.safetensors

  adaptir pretrain --gt BSD400/ --init x1.safetensors --tasks denoise,derain=derain-varied --lr 5e-5 --out x2.safetensors

  torchrun --nproc-per-node 8 -m adaptir_cli pretrain --gt DF2K/ --batch 8 --out base.safetensors

Default tasks: {DEFAULT_TASKS} (denoise is blind, sigma 0-55; derain uses synthetic light rain).
TASK=DEGRADATION trains that head on another synthetic degradation of its scale (adaptir finetune
--help lists them).
"""


def parse_tasks(text: str) -> tuple[list[str], dict[str, str]]:
    """`--tasks` "denoise,derain=derain-varied" as the tasks in order and the degradations given."""
    tasks: list[str] = []
    degradations: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        task, sep, degradation = (piece.strip() for piece in entry.partition("="))
        if sep and not (task and degradation):
            raise ValueError(f"--tasks entry {entry!r} is not TASK or TASK=DEGRADATION")
        tasks.append(task)
        if degradation:
            degradations[task] = degradation
    return tasks, degradations


def pretrain(
    gt: Path = opt.GT,
    out: Path = typer.Option(
        ..., "--out", "-o", help="Base file to write (.safetensors); its JSON log goes beside it.", metavar="FILE",
    ),
    tasks: Optional[str] = typer.Option(
        None, "--tasks", metavar="TASK[=DEGRADATION],...", show_default=False,
        help=f"Comma-separated tasks, one head and tail each (default {DEFAULT_TASKS}; with --init, its heads); "
        "TASK=DEGRADATION trains that head on another synthetic degradation (derain=derain-varied).",
    ),
    init: Optional[Path] = typer.Option(
        None, "--init", metavar="FILE", exists=True, dir_okay=False,
        help="Start from this CompactIR base's weights, shape and heads instead of random weights: a further "
        "stage, e.g. a head on another degradation at a lower --lr.",
    ),
    arch: str = typer.Option("compactir", "--arch", help="Architecture to build (compactir).", metavar="ARCH"),
    dim: Optional[int] = typer.Option(
        None, "--dim", min=1, help="Feature width of the body (default 48).", metavar="N",
    ),
    blocks: Optional[int] = typer.Option(
        None, "--blocks", min=1, help="Transformer blocks in the body (default 8).", metavar="N",
    ),
    attention_heads: Optional[int] = typer.Option(
        None, "--attention-heads", min=1, help="Attention heads per block (default 3).", metavar="N",
    ),
    window: Optional[int] = typer.Option(
        None, "--window", min=2, help="Attention window side, even (default 8).", metavar="N",
    ),
    mlp_ratio: Optional[int] = typer.Option(
        None, "--mlp-ratio", min=1, help="MLP width / feature width (default 2).", metavar="N",
    ),
    refine: Optional[int] = typer.Option(
        None, "--refine", min=0,
        help="Channels of a 3x3 conv at the output resolution in every tail (default 0: none).", metavar="N",
    ),
    grey_share: float = typer.Option(
        0.0, "--grey-share", min=0.0, max=1.0,
        help="Share of the samples made grey (with grey noise), so grey photos restore well.", metavar="P",
    ),
    exclude: Optional[Path] = opt.EXCLUDE,
    val_gt: Optional[Path] = opt.VAL_GT,
    val_fraction: float = opt.VAL_FRACTION,
    val_crop: int = opt.VAL_CROP,
    steps: int = opt.STEPS,
    batch: int = opt.BATCH,
    patch: int = opt.PATCH,
    lr: float = typer.Option(PRETRAIN_LR, "--lr", min=0.0, help="Peak learning rate.", metavar="RATE"),
    schedule: str = opt.SCHEDULE,
    warmup: Optional[int] = opt.WARMUP,
    weight_decay: float = opt.WEIGHT_DECAY,
    grad_clip: float = opt.GRAD_CLIP,
    phase_loss: float = typer.Option(0.0, "--phase-loss", min=0.0, help=opt.PHASE_LOSS_HELP, metavar="WEIGHT"),
    seed: int = opt.SEED,
    val_every: int = opt.VAL_EVERY,
    checkpoint_every: int = opt.CHECKPOINT_EVERY,
    resume: bool = opt.RESUME,
    device: str = opt.DEVICE,
    precision: str = opt.PRECISION,
    workers: int = opt.WORKERS,
    json_out: bool = opt.JSON_OUT,
    quiet: bool = opt.QUIET,
) -> None:
    """Advanced: pre-train a multi-task base from scratch (shared body, one head and tail per task)."""
    if arch not in ARCHITECTURES:
        opt.usage_failure(ValueError(f"unknown --arch {arch!r}; pre-training builds: {', '.join(ARCHITECTURES)}"))
    try:
        names, degradations = parse_tasks(tasks) if tasks is not None else (None, {})
        sizes = dict(dim=dim, blocks=blocks, heads=attention_heads, window=window, mlp_ratio=mlp_ratio, refine=refine)
        start = load_init(init) if init is not None else None  # read once: checked here, trained from below
        if start is not None:
            config = init_config(start, names, **sizes)
        else:
            config = compactir_config(names or DEFAULT_TASKS.split(","), **sizes)
    except (KeyError, ValueError) as error:
        opt.usage_failure(error)
    settings = opt.loop_settings(
        steps=steps, batch=batch, patch=patch, lr=lr, schedule=schedule, warmup=warmup, weight_decay=weight_decay,
        grad_clip=grad_clip, phase_loss=phase_loss, seed=seed, val_every=val_every, checkpoint_every=checkpoint_every,
        precision=precision, workers=workers,
    )
    data = DataOptions(gt=gt, exclude=exclude, val_gt=val_gt, val_fraction=val_fraction, val_crop=val_crop)
    with opt.reported_training_errors():
        outcome = run_pretrain(config, out, data, settings, device=device, resume=resume, console=stderr,
                               show_progress=not quiet, grey_share=grey_share, degradations=degradations,
                               init=start)
    if outcome.main:
        opt.report_outcome("base", outcome.base, outcome.log, outcome.result, quiet=quiet, json_out=json_out,
                           tasks=config.head_names)
