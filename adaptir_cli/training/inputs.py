"""What each task trains and validates on: its degradation, its samples, its validation set."""

from __future__ import annotations

from adaptir_cli.bases.descriptor import BaseDescriptor
from adaptir_cli.bases.model import LoadedBase
from adaptir_cli.tasks import get_task, head_for
from adaptir_cli.training.data import DataError, DataOptions, PreparedData
from adaptir_cli.training.sampling import (
    TaskData,
    degradation_names,
    training_degradation,
    validation_degradation,
    validation_pairs,
)
from adaptir_cli.training.validation import ValidationSet


def degradation_for(options: DataOptions, task: str) -> str | None:
    """The synthetic degradation to train with, or None for given pairs."""
    if options.lq is not None:
        if options.degradation is not None:
            raise DataError("give either --lq (your own inputs) or --degradation (synthetic ones), not both")
        return None
    return synthetic_degradation(options.degradation or task, task)


def synthetic_degradation(name: str, task: str) -> str:
    """`name`, checked to be a synthetic degradation of `task`'s scale."""
    if name not in degradation_names():
        raise DataError(
            f"no synthetic degradation is named {name!r}; name one of {', '.join(degradation_names())}, "
            "or pass --lq DIR with your own inputs"
        )
    scale = get_task(task).scale
    if training_degradation(name).scale != scale:
        raise DataError(f"degradation {name} is x{training_degradation(name).scale} but task {task} is x{scale}")
    return name


def task_data(
    task: str, head_index: int, prepared: PreparedData, degradation: str | None, seed: int, crop: int,
    grey_share: float = 0.0,
) -> tuple[TaskData, ValidationSet | None]:
    """What the loop samples for `task` (through head `head_index`) and what it validates on
    (`grey_share` of the samples made grey: TaskData)."""
    scale = get_task(task).scale
    data = TaskData(
        task, head_index, scale, prepared.train, training_degradation(degradation) if degradation else None, grey_share
    )
    validation = None
    if prepared.validation is not None:
        made_with = None if prepared.validation.lq is not None else validation_degradation(degradation or task)
        pairs = validation_pairs(prepared.validation, scale, made_with, seed, crop)
        validation = ValidationSet(task, head_index, scale, pairs)
    return data, validation


def check_head(base: LoadedBase, task: str) -> int:
    """The index of the head `base` runs `task` with; DataError when its scale is not the task's."""
    chosen = get_task(task)
    name = head_for(chosen, base.descriptor.heads)
    head = base.descriptor.head(name)
    if head.scale != chosen.scale:
        raise DataError(f"task {task} is x{chosen.scale} but head {name!r} of {base.name} is x{head.scale}")
    return head.index


def check_patch(base_name: str, descriptor: BaseDescriptor, patch: int) -> None:
    """Refuse a crop size the base cannot take, before any image is decoded."""
    if descriptor.fixed_size and patch != descriptor.fixed_size:
        raise DataError(f"{base_name} only takes {descriptor.fixed_size} px inputs; use --patch {descriptor.fixed_size}")
    if patch < descriptor.min_size:
        raise DataError(
            f"{base_name} needs inputs of at least {descriptor.min_size} px; use --patch {descriptor.min_size} or more"
        )
