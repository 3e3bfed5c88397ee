"""Pre-training a whole multi-task base from scratch (the library behind `adaptir pretrain`).

As IPT was pre-trained: one shared body, one head and tail per task, and one task drawn per step
(the same in every process), so the body learns what the tasks share. Every task's inputs are
synthesised on the fly from the same clean images (by default the task's own degradation:
`denoise` is blind, sigma 0-55 per sample; `derain` uses the synthetic light rain). Same data,
loop, checkpoints and progress as finetune. A further stage starts from a base file instead of
random weights (`init`: e.g. one head on another degradation, at a lower rate). The output is a base `.safetensors` file that
`adaptir_cli.bases.load_base_file` loads, plus the JSON log beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console

from adaptir_cli.bases import LoadedBase, load_base_file
from adaptir_cli.bases.compactir import CompactIRConfig, build_compactir, describe
from adaptir_cli.tasks import get_task
from adaptir_cli.training.base_file import save_base
from adaptir_cli.training.checkpoint import checkpoint_path, log_path, write_json
from adaptir_cli.training.data import DataError, DataOptions, check_sizes, prepare_images
from adaptir_cli.distributed import Distributed, barrier, setup, shutdown
from adaptir_cli.training.inputs import check_patch, synthetic_degradation, task_data
from adaptir_cli.training.loop import LoopSettings, StepCallback, Trainee, TrainResult, train

# Architectures `adaptir pretrain --arch` can build from scratch.
ARCHITECTURES = ("compactir",)


@dataclass(frozen=True)
class PretrainOutcome:
    base: Path
    log: Path
    result: TrainResult
    main: bool  # whether this process wrote the files (the first one under torchrun)


def compactir_config(tasks: list[str], **sizes: int | None) -> CompactIRConfig:
    """A CompactIR config with one head per task; size options left as None keep the defaults."""
    if not tasks:
        raise DataError("give at least one task to pre-train (--tasks sr2,denoise,...)")
    if len(set(tasks)) != len(tasks):
        raise DataError(f"--tasks names a task twice: {','.join(tasks)}")
    chosen = {name: value for name, value in sizes.items() if value is not None}
    return CompactIRConfig(tasks=tuple((task, get_task(task).scale) for task in tasks), **chosen)


def init_config(init: Path | LoadedBase, tasks: list[str] | None = None, **sizes: int | None) -> CompactIRConfig:
    """The config of the CompactIR base (a file, or `load_init`'s result) that a further stage of
    pre-training starts from. `tasks` (default: its heads) and any size option given must agree."""
    start = load_init(init)
    config = start.module.config
    if tasks is not None and sorted(tasks) != config.head_names:
        raise DataError(f"{start.source} has the heads {','.join(config.head_names)}: --tasks must name these")
    chosen = {name: value for name, value in sizes.items() if value is not None}
    if differing := sorted(name for name, value in chosen.items() if getattr(config, name) != value):
        raise DataError(
            f"{start.source} is shaped {', '.join(f'{name}={getattr(config, name)}' for name in differing)}: "
            "leave the size options out when starting from a file"
        )
    return config


def load_init(init: Path | LoadedBase) -> LoadedBase:
    """The CompactIR base a further stage starts from, loaded once (a loaded one is checked as is)."""
    start = init if isinstance(init, LoadedBase) else load_base_file(Path(init))
    if start.descriptor.architecture != "compactir":
        raise DataError(
            f"{start.source} is a {start.descriptor.architecture} base; pre-training continues CompactIR bases only"
        )
    return start


def pretrain(
    config: CompactIRConfig,
    out: Path,
    data: DataOptions,
    settings: LoopSettings,
    *,
    device: str = "auto",
    resume: bool = False,
    console: Console | None = None,
    show_progress: bool = True,
    on_step: StepCallback | None = None,
    grey_share: float = 0.0,
    degradations: Mapping[str, str] | None = None,
    init: Path | LoadedBase | None = None,
) -> PretrainOutcome:
    """Train a CompactIR base with `config` (one head per task: `compactir_config`) from scratch;
    write it to `out` (+ `out`.json). Checkpointing, resuming and torchrun behave as in `finetune`.
    `grey_share` of the samples are made grey, with grey noise. `degradations` maps a task to the
    synthetic degradation its head trains on instead of its own (derain -> derain-varied). `init`
    starts from that CompactIR base's weights instead of random ones (a file, or `load_init`'s
    result so that it is read once; its config: `init_config`).
    """
    context = setup(device)
    try:
        return _pretrain(config, Path(out), data, settings, context, resume, console, show_progress, on_step,
                         grey_share, dict(degradations or {}), init)
    finally:
        shutdown(context)


def _pretrain(
    config: CompactIRConfig, out: Path, data: DataOptions, settings: LoopSettings, context: Distributed,
    resume: bool, console: Console | None, show_progress: bool, on_step: StepCallback | None, grey_share: float,
    chosen: dict[str, str], init: Path | LoadedBase | None,
) -> PretrainOutcome:
    tasks = config.head_names
    if data.lq is not None or data.degradation is not None:
        raise DataError("pre-training synthesises every task's inputs from clean images: give --gt only")
    if unknown := sorted(set(chosen) - set(tasks)):
        raise DataError(
            f"a degradation is given for {', '.join(unknown)}, which is not among the tasks {','.join(tasks)}"
        )
    # The start, before any image is decoded: a wrong file fails at once.
    start = load_init(init) if init is not None else None
    if start is not None and start.module.config != config:
        raise DataError(f"{start.source} is not shaped as the base to train ({config}); take the config from init_config")
    descriptor = describe(config)
    check_patch("compactir", descriptor, settings.patch)
    degradations = {task: synthetic_degradation(chosen.get(task, task), task) for task in tasks}
    prepared = prepare_images(data, False, settings.seed, settings.workers)
    check_sizes(prepared.train, max(get_task(task).scale for task in tasks), settings.patch)
    task_inputs = [
        task_data(task, descriptor.heads[task].index, prepared, degradations[task], settings.seed, data.val_crop, grey_share)
        for task in tasks
    ]
    torch.manual_seed(settings.seed)  # the initial weights; DDP also copies rank 0's to all
    module = build_compactir(config)
    if start is not None:
        module.load_state_dict(start.module.state_dict(), strict=True)
    trainee = Trainee(
        module=module,
        descriptor=descriptor,
        tasks=[inputs for inputs, _ in task_inputs],
        validation=[validation for _, validation in task_inputs if validation is not None],
        set_train_mode=lambda m: m.train(),
        trainable_state=module.state_dict,
        load_trainable_state=lambda state: module.load_state_dict(state, strict=True),
        find_unused_parameters=len(tasks) > 1,
    )
    model_config = asdict(config)
    identity = {"command": "pretrain", "arch": "compactir", "config": model_config, "data": data.to_json(),
                "images": prepared.train.names, "grey_share": grey_share}
    if any(name != task for task, name in degradations.items()):
        # Only then: runs on the tasks' own degradations, as all were before the option, keep their identity.
        identity["degradations"] = degradations
    if start is not None:
        identity["init"] = start.sha256
    checkpoint = checkpoint_path(out)
    result = train(
        trainee, settings, context, checkpoint=checkpoint, identity=identity, resume=resume,
        title=f"pretrain {','.join(tasks)}", console=console, show_progress=show_progress, on_step=on_step,
        validate_start=start is not None,  # a further stage: the log shows what it changed
    )
    summary = {
        **result.summary(settings),
        "arch": "compactir",
        "config": model_config,
        "tasks": tasks,
        "degradations": degradations,
        "grey_share": grey_share,
        "data": prepared.summary(data),
        **({"init": {"file": start.source, "sha256": start.sha256}} if start is not None else {}),
    }
    log = log_path(out)
    if context.main:
        save_base(out, module, summary)
        write_json(log, {"command": "pretrain", "settings": settings.to_json(), "summary": summary,
                         "history": result.history.to_json(), "images": prepared.train.names})
        checkpoint.unlink(missing_ok=True)
    barrier(context)
    return PretrainOutcome(out, log, result, context.main)

