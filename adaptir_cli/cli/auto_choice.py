"""`adaptir restore --task auto`: classify each such input before the bases load, and say what was chosen."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from adaptir_cli.cli.common import fail_with, split_hint, stderr, usage_error
from adaptir_cli.file_jobs import Job, JobPlanError, JobResult
from adaptir_cli.tasks import AUTO

if TYPE_CHECKING:  # auto_task pulls in torch, which --help does not need
    from adaptir_cli.auto_task import AutoChoice
    from adaptir_cli.distributed import Distributed


def choose(
    jobs: list[Job], *, max_megapixels: float | None, quiet: bool, context: "Distributed | None" = None,
) -> tuple[list[Job], dict[Path, "AutoChoice"], list[JobResult]]:
    """The jobs with "auto" replaced by each image's task, the choices by output, and the images
    that could not be read (failed results); prints one line per choice unless `quiet`.
    Under torchrun (`context`) the processes share the classifying."""
    count = sum(job.task == AUTO for job in jobs)
    if not count:
        return jobs, {}, []
    from adaptir_cli.auto_task import AutoTaskError, choose_tasks

    try:
        with nullcontext() if quiet else stderr.status(f"Choosing the task of {count} image(s) ...", spinner="dots"):
            planned, choices, unreadable = choose_tasks(jobs, max_megapixels=max_megapixels, context=context)
    except JobPlanError as error:
        usage_error(*split_hint(error))
    except AutoTaskError as error:
        fail_with(error)
    if not quiet:
        for job in planned:
            if job.output in choices:
                stderr.print(f"auto: {escape(job.source.name)} -> {escape(choices[job.output].describe())}", highlight=False)
    return planned, choices, unreadable


def to_json(choices: dict[Path, "AutoChoice"], output: Path) -> dict[str, object]:
    """The `auto` field of one image in `restore --json` (nothing for an explicit --task)."""
    choice = choices.get(output)
    return {} if choice is None else {"auto": choice.to_json()}
