"""Fine-tuning: train one adapter for one task on a frozen base (the library behind `adaptir finetune`).

Only the adapter's tensors train: the base stays in eval mode with gradients off, and a digest of
every base tensor taken before the adapters are injected is compared after training - a base
changed by training would make every adapter trained on it unusable with the published weights.
The result is an adapter file (adapters/file_format.py) whose metadata carries the training
summary, plus a JSON log beside it with the settings and the loss/validation history.

`method="full"` is the reference PETL methods are measured against (`adaptir experiment`'s
"full" runs): every tensor of the base trains, with the same data, loop and settings, and the
result is a new base file, written as `adaptir pretrain` writes one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from adaptir_cli.adapters import (
    adapted_layers,
    adapter_state_dict,
    get_method,
    inject,
    load_adapter_state_dict,
    mark_only_adapters_trainable,
    save_adapter,
    train_adapters,
)
from adaptir_cli.bases.loading import tensor_digest
from adaptir_cli.bases.model import LoadedBase
from adaptir_cli.tasks import get_task
from adaptir_cli.training.base_file import save_base
from adaptir_cli.training.checkpoint import checkpoint_path, log_path, write_json
from adaptir_cli.training.data import DataOptions, PreparedData, check_sizes, prepare_images
from adaptir_cli.distributed import Distributed, barrier, setup, shutdown
from adaptir_cli.training.inputs import check_head, check_patch, degradation_for, task_data
from adaptir_cli.training.loop import LoopSettings, StepCallback, Trainee, TrainResult, train
from adaptir_cli.training.sampling import TaskData
from adaptir_cli.training.validation import ValidationSet


def base_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The base's own tensors under their original names, whether adapters are injected or not.

    Injection moves a wrapped MLP's tensors to "{target}.base_layer.*" and adds "{target}.adapter.*";
    this undoes the renaming and leaves the adapters out. By name, not by tensor object: moving a
    module to another device replaces its buffers.
    """
    targets = list(adapted_layers(module))
    state = {}
    for key, tensor in module.state_dict().items():
        target = next((t for t in targets if key.startswith(f"{t}.")), None)
        if target is not None:
            rest = key[len(target) + 1 :]
            if not rest.startswith("base_layer."):
                continue  # the adapter's own tensors
            key = f"{target}.{rest[len('base_layer.'):]}"
        state[key] = tensor
    return state


# The `method` that trains the whole base instead of an adapter.
FULL = "full"

# Config fields `finetune` gives a method when they are left out, where they differ from the
# method's own (paper) defaults. AdaptIR's hidden width is max(min_hidden, d // 24): on IPT (d 576)
# that is the paper's 24, but on the small bases shipped here the floor decides it, and at a small
# budget the width mattered more than the learning rate (EMT x4: h 32 gained 1.7 dB over h 16;
# docs/training.md, "Defaults for a user's budget"). The bare method (`inject`, adapter files)
# keeps the paper's sizes.
FINETUNE_CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {"adaptir": {"min_hidden": 16}}


def finetune_config(method: str, values: Mapping[str, Any] | None = None) -> Any:
    """The config `finetune` trains `method` with: `values` over FINETUNE_CONFIG_DEFAULTS over the
    method's defaults. Raises KeyError for an unknown method, ValueError for an invalid field."""
    spec, values = get_method(method), dict(values or {})
    spec.config_from_dict(values)  # so that an error lists the fields the user gave, not ours
    return spec.config_from_dict({**FINETUNE_CONFIG_DEFAULTS.get(method, {}), **values})


@dataclass(frozen=True)
class FinetuneOutcome:
    output: Path  # the adapter file; for method "full", the tuned base's weights file
    log: Path
    result: TrainResult
    main: bool  # whether this process wrote the files (the first one under torchrun)


def finetune(
    base: LoadedBase | str | Path,
    task: str,
    out: Path,
    data: DataOptions,
    settings: LoopSettings,
    *,
    method: str = "adaptir",
    config: Any = None,
    device: str = "auto",
    resume: bool = False,
    console: Console | None = None,
    show_progress: bool = True,
    on_step: StepCallback | None = None,
) -> FinetuneOutcome:
    """Train a `method` adapter for `task` on the frozen `base`; write it to `out` (+ `out`.json).

    `method=FULL` ("full") trains every tensor of the base instead and writes the tuned base (a
    new base, with its own sha256: adapters of the original refuse it); a LoadedBase passed in
    is then trained in place. Under torchrun every process calls this; only the first writes files. A checkpoint beside
    `out` (`NAME.ckpt`) is written every `settings.checkpoint_every` steps and on interruption,
    continued with `resume=True`, and removed once the adapter is written.
    """
    context = setup(device)
    try:
        if method == FULL:
            return _finetune_full(_loaded(base), task, Path(out), data, settings, context, resume, console,
                                  show_progress, on_step)
        return _finetune(base, task, Path(out), data, settings, method, config, context, resume, console,
                         show_progress, on_step)
    finally:
        shutdown(context)


def _finetune(
    base: LoadedBase | str | Path, task: str, out: Path, data: DataOptions, settings: LoopSettings, method: str,
    config: Any, context: Distributed, resume: bool, console: Console | None, show_progress: bool,
    on_step: StepCallback | None,
) -> FinetuneOutcome:
    base = _loaded(base)
    spec = get_method(method)
    config = finetune_config(method) if config is None else config
    degradation, prepared, training_data, validation = _task_inputs(base, task, data, settings)

    module = base.module
    before = tensor_digest(base_state(module))
    torch.manual_seed(settings.seed)  # the adapters' initial values; DDP also copies rank 0's to all
    inject(module, base.descriptor, method, config)
    mark_only_adapters_trainable(module)
    trainee = Trainee(
        module=module,
        descriptor=base.descriptor,
        tasks=[training_data],
        validation=[validation] if validation else [],
        set_train_mode=train_adapters,
        trainable_state=lambda: adapter_state_dict(module),
        load_trainable_state=lambda state: load_adapter_state_dict(module, state),
    )
    identity = {
        "command": "finetune", "base_sha256": base.sha256, "task": task, "method": method,
        "method_config": spec.config_to_dict(config), "data": data.to_json(), "images": prepared.train.names,
    }
    checkpoint = checkpoint_path(out)
    result = train(
        trainee, settings, context, checkpoint=checkpoint, identity=identity, resume=resume,
        title=f"finetune {task}", console=console, show_progress=show_progress, on_step=on_step,
        validate_start=True,
    )
    if tensor_digest(base_state(module)) != before:
        raise RuntimeError("the frozen base changed during fine-tuning; this is a bug in adaptir, please report it")

    summary = {
        **result.summary(settings),
        "data": prepared.summary(data),
        "degradation": degradation or "given pairs",
        # One task: its metrics, not a table of one row.
        "start_validation": (result.start_validation or {}).get(task),
        "final_validation": (result.final_validation or {}).get(task),
        "base_unchanged": True,
    }
    log = log_path(out)
    if context.main:
        save_adapter(out, module, method=method, config=config, base=base, task=task, training=summary)
        write_json(log, {
            "command": "finetune", "base": base.name, "base_sha256": base.sha256, "task": task, "method": method,
            "method_config": spec.config_to_dict(config), "settings": settings.to_json(), "summary": summary,
            "history": result.history.to_json(), "images": prepared.train.names,
        })
        checkpoint.unlink(missing_ok=True)
    barrier(context)
    return FinetuneOutcome(out, log, result, context.main)


def _loaded(base: LoadedBase | str | Path) -> LoadedBase:
    if isinstance(base, LoadedBase):
        return base
    from adaptir_cli.weights.resolve import load_base

    return load_base(base)


def _task_inputs(
    base: LoadedBase, task: str, data: DataOptions, settings: LoopSettings
) -> tuple[str | None, PreparedData, TaskData, ValidationSet | None]:
    """Check that `base` can train `task` at `settings.patch`; decode the data and pick the degradation."""
    head_index = check_head(base, task)
    check_patch(base.name, base.descriptor, settings.patch)
    degradation = degradation_for(data, task)
    prepared = prepare_images(data, degradation is None, settings.seed, settings.workers)
    check_sizes(prepared.train, get_task(task).scale, settings.patch)
    training_data, validation = task_data(task, head_index, prepared, degradation, settings.seed, data.val_crop)
    return degradation, prepared, training_data, validation


# --- full fine-tuning: the reference the PETL methods are compared with ----------------------


def train_whole_base(module: nn.Module) -> None:
    """Train mode for the whole base, except BatchNorm layers, which keep their running statistics.

    Full fine-tuning changes the weights, not how the layers compute: a BatchNorm in train mode
    would normalise with the statistics of a batch of 48 px crops and overwrite the running ones
    the base was trained with. (EMT's InferenceBatchNorm2d ignores the mode anyway.)
    """
    module.train()
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


def _finetune_full(
    base: LoadedBase, task: str, out: Path, data: DataOptions, settings: LoopSettings, context: Distributed,
    resume: bool, console: Console | None, show_progress: bool, on_step: StepCallback | None,
) -> FinetuneOutcome:
    if adapted_layers(base.module):
        raise ValueError(f"{base.name} has adapters injected; full fine-tuning needs the bare base")
    degradation, prepared, training_data, validation = _task_inputs(base, task, data, settings)
    module = base.module
    torch.manual_seed(settings.seed)  # nothing is initialised randomly, but keep the RNG where finetune has it
    module.requires_grad_(True)
    trainee = Trainee(
        module=module,
        descriptor=base.descriptor,
        tasks=[training_data],
        validation=[validation] if validation else [],
        set_train_mode=train_whole_base,
        trainable_state=module.state_dict,
        load_trainable_state=lambda state: module.load_state_dict(state, strict=True),
        # The heads of other tasks get no gradient, which DDP must expect.
        find_unused_parameters=len(base.descriptor.heads) > 1,
    )
    identity = {
        "command": "finetune-full", "base_sha256": base.sha256, "task": task, "data": data.to_json(),
        "images": prepared.train.names,
    }
    checkpoint = checkpoint_path(out)
    try:
        result = train(
            trainee, settings, context, checkpoint=checkpoint, identity=identity, resume=resume,
            title=f"full finetune {task}", console=console, show_progress=show_progress, on_step=on_step,
            validate_start=True,
        )
    finally:
        module.requires_grad_(False)
        module.eval()
    summary = {
        **result.summary(settings),
        "method": "full",
        "task": task,
        "tuned_from": {"name": base.name, "sha256": base.sha256, "architecture": base.descriptor.architecture},
        "data": prepared.summary(data),
        "degradation": degradation or "given pairs",
        "final_validation": (result.final_validation or {}).get(task),
    }
    log = log_path(out)
    if context.main:
        save_base(out, module, summary)
        write_json(log, {
            "command": "finetune-full", "base": base.name, "base_sha256": base.sha256, "task": task,
            "settings": settings.to_json(), "summary": summary, "history": result.history.to_json(),
            "images": prepared.train.names,
        })
        checkpoint.unlink(missing_ok=True)
    barrier(context)
    return FinetuneOutcome(out, log, result, context.main)
