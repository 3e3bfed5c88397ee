"""Task names users type, and how each maps onto a base's heads.

A task is what a user wants done ("derain"); a head is what a base was trained for ("derain" on
IPT, "sr4" on EMT x4). Hybrid tasks borrow the head of the closest pre-trained task, as the paper
does (IPT head 2 for the x4 hybrids, head 5 for low light); the adapter does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

# Not a task: `--task auto` lets a classifier pick one per image (adaptir_cli/auto_task.py).
AUTO = "auto"


@dataclass(frozen=True)
class Task:
    name: str
    scale: int
    # Heads to use, best first; the first one the base has is taken.
    heads: tuple[str, ...]
    description: str
    # Hybrid and unseen degradations: the borrowed head alone is not a restoration of them.
    adapter_required: bool = False


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("sr2", 2, ("sr2",), "super-resolution x2 (bicubic down-sampling)"),
        Task("sr3", 3, ("sr3",), "super-resolution x3 (bicubic down-sampling)"),
        Task("sr4", 4, ("sr4",), "super-resolution x4 (bicubic down-sampling)"),
        Task("denoise", 1, ("denoise", "denoise30", "denoise50", "x1"), "Gaussian denoising"),
        Task("denoise30", 1, ("denoise30", "denoise", "x1"), "Gaussian denoising, sigma 30"),
        Task("denoise50", 1, ("denoise50", "denoise", "x1"), "Gaussian denoising, sigma 50"),
        Task("derain", 1, ("derain", "x1"), "rain-streak removal (light rain)"),
        Task("derain-heavy", 1, ("derain", "x1"), "rain-streak removal (heavy rain)", True),
        Task("lowlight", 1, ("lowlight", "denoise50", "denoise", "x1"), "low-light enhancement", True),
        Task("lr4-noise30", 4, ("sr4",), "x4 bicubic down-sampling plus Gaussian noise sigma 30", True),
        Task("lr4-jpeg30", 4, ("sr4",), "x4 bicubic down-sampling plus JPEG quality 30", True),
    )
}


class UnknownTaskError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def head_for(task: Task, heads: dict[str, object]) -> str:
    """The base head this task runs on, or a clear error when the base cannot do the task."""
    for head in task.heads:
        if head in heads:
            return head
    raise UnknownTaskError(
        f"this base has no head for task {task.name!r} (it has {', '.join(sorted(heads))}); "
        f"pick a base trained for {task.heads[0]!r} or with scale {task.scale}"
    )
