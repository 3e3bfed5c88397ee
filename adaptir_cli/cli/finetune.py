"""`adaptir finetune`: train an adapter for one task on a frozen base (the work is in adaptir_cli.training)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from adaptir_cli.adapters import METHODS, get_method
from adaptir_cli.cli import completion as complete
from adaptir_cli.cli import training_options as opt
from adaptir_cli.cli.common import stderr
from adaptir_cli.tasks import TASKS, get_task
from adaptir_cli.training.data import DataOptions
from adaptir_cli.training.finetune import FULL, finetune_config
from adaptir_cli.training.loop import FINETUNE_DEFAULTS
from adaptir_cli.training.finetune import finetune as run_finetune
from adaptir_cli.training.sampling import degradation_names
from adaptir_cli.weights.resolve import base_for

EXAMPLES = """
Examples:

  adaptir finetune --task lr4-noise30 --gt DIV2K_HR/ --val-fraction 0.02 --out lr4n30.safetensors   # on its default base

  adaptir finetune --base lmlt-tiny-x4 --task lr4-noise30 --gt DIV2K_HR/ --out lr4n30-lmlt.safetensors

  adaptir finetune --base emt-x4 --task sr4 --gt DIV2K_HR/ --lq DIV2K_LR_x4/ --lq-template '{stem}x4{ext}' --out sr4.safetensors

  adaptir finetune --base base.safetensors --task lowlight --gt BSD400/ --steps 20000 --hidden 24 --out lowlight.safetensors

  adaptir finetune ... --method lora --rank 8 --set alpha=16        # a PETL baseline; see docs/methods.md

  adaptir finetune ... --method adaptir --set frequency=false       # an AdaptIR ablation (no FAM branch)

  adaptir finetune ... --resume                      # continue after Ctrl-C or a crash

  torchrun --nproc-per-node 4 -m adaptir_cli finetune ... --batch 4   # 4 GPUs, global batch 16
"""


def finetune(
    base: Optional[str] = typer.Option(
        None, "--base", "-b",
        help="Frozen base: a name from `adaptir models list` or a weights file. Default: the one restore uses for --task.",
        metavar="NAME|FILE", autocompletion=complete.bases,
    ),
    task: str = typer.Option(
        ..., "--task", "-t", help=f"Task the adapter is for ({', '.join(TASKS)}).", metavar="TASK",
        autocompletion=complete.tasks,
    ),
    gt: Path = opt.GT,
    out: Path = typer.Option(
        ..., "--out", "-o", help="Adapter file to write (.safetensors); its JSON log goes beside it.", metavar="FILE",
    ),
    lq: Optional[Path] = typer.Option(
        None, "--lq", help="Folder of your own inputs, paired with --gt by file name.", metavar="DIR",
    ),
    degradation: Optional[str] = typer.Option(
        None, "--degradation", "-d",
        help=f"Synthesise inputs from --gt on the fly: {', '.join(degradation_names())}. Default: the task's own.",
        metavar="NAME",
    ),
    lq_template: Optional[str] = typer.Option(
        None, "--lq-template",
        help="Input file name from the ground truth's {name}, {stem}, {ext}: e.g. '{stem}x4{ext}'.", metavar="TEMPLATE",
    ),
    exclude: Optional[Path] = opt.EXCLUDE,
    val_gt: Optional[Path] = opt.VAL_GT,
    val_lq: Optional[Path] = opt.VAL_LQ,
    val_fraction: Optional[float] = opt.FINETUNE_VAL_FRACTION,
    val_crop: int = opt.VAL_CROP,
    method: str = typer.Option(
        "adaptir", "--method",
        help=f"Adapter method ({', '.join(METHODS)}), or {FULL} to fine-tune the whole base (the reference).",
        metavar="METHOD",
    ),
    hidden: Optional[int] = typer.Option(
        None, "--hidden", min=1,
        help="Hidden width of adaptir, adapter, adaptformer (default: max(16, d // 24) for adaptir, max(8, d // 24) "
        "for the others; the paper: d // 24).", metavar="N",
    ),
    rank: Optional[int] = typer.Option(
        None, "--rank", min=1, help="Rank of lora's updates (default 4), or of adaptir's local kernel (hidden // 2).",
        metavar="N",
    ),
    settings_: list[str] = typer.Option(
        [], "--set",
        help="Any other field of the method's config, KEY=VALUE (lora alpha, adaptformer scale, adaptir "
        "local/frequency/channel/ensemble for the ablations); repeatable.", metavar="KEY=VALUE",
    ),
    steps: int = opt.STEPS,
    batch: int = opt.BATCH,
    patch: int = opt.PATCH,
    lr: float = typer.Option(
        FINETUNE_DEFAULTS["lr"], "--lr", min=0.0, help="Peak learning rate (the paper's: 1e-4; EMT x4: 5e-4).",
        metavar="RATE",
    ),
    schedule: str = opt.SCHEDULE,
    warmup: Optional[int] = opt.WARMUP,
    weight_decay: float = opt.WEIGHT_DECAY,
    grad_clip: float = opt.GRAD_CLIP,
    phase_loss: float = opt.PHASE_LOSS,
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
    """Train an adapter for TASK on a frozen base: only the adapter's tensors change."""
    try:
        get_task(task)
        fields = dict(_key_value(text) for text in settings_)
        fields |= {name: str(value) for name, value in (("hidden", hidden), ("rank", rank)) if value is not None}
        if method == FULL:
            if fields:
                raise ValueError("--method full trains the whole base: it takes no --hidden, --rank or --set")
            config = None
        else:
            config = finetune_config(method, get_method(method).fields_from_strings(fields))
    except (KeyError, ValueError) as error:
        opt.usage_failure(error)
    settings = opt.loop_settings(
        steps=steps, batch=batch, patch=patch, lr=lr, schedule=schedule, warmup=warmup, weight_decay=weight_decay,
        grad_clip=grad_clip, phase_loss=phase_loss, seed=seed, val_every=val_every, checkpoint_every=checkpoint_every,
        precision=precision, workers=workers,
    )
    data = DataOptions(
        gt=gt, lq=lq, degradation=degradation, lq_template=lq_template, exclude=exclude, val_gt=val_gt,
        val_lq=val_lq, val_fraction=val_fraction, val_crop=val_crop,
    )
    with opt.reported_training_errors():
        outcome = run_finetune(
            base_for(task, base), task, out, data, settings, method=method, config=config, device=device, resume=resume,
            console=stderr, show_progress=not quiet,
        )
    if outcome.main:
        opt.report_outcome("base" if method == FULL else "adapter", outcome.output, outcome.log, outcome.result, quiet=quiet, json_out=json_out,
                           task=task)


def _key_value(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise ValueError(f"--set takes KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()
