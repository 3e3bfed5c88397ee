"""What the shell completes for options that take a name (Typer's `autocompletion=`).

Each function gets the word typed so far and returns the names that start with it (--base and
--adapter also take files; only the names are offered).
"""

from __future__ import annotations

from collections.abc import Iterable

from adaptir_cli.runtime import PRECISIONS
from adaptir_cli.tasks import AUTO, TASKS
from adaptir_cli.weights.manifest import default_manifest

# cuda:N is typed by hand: the GPUs of the machine the shell runs on are not worth a CUDA start.
DEVICES = ("auto", "cpu", "cuda")


def _starting(values: Iterable[str], incomplete: str) -> list[str]:
    return [value for value in values if value.startswith(incomplete)]


def tasks(incomplete: str) -> list[str]:
    return _starting(TASKS, incomplete)


def restore_tasks(incomplete: str) -> list[str]:
    """restore alone also takes `auto` (a classifier picks each image's task)."""
    return _starting([*TASKS, AUTO], incomplete)


def bases(incomplete: str) -> list[str]:
    return _starting(default_manifest().bases, incomplete)


def adapters(incomplete: str) -> list[str]:
    return _starting(default_manifest().adapters, incomplete)


def devices(incomplete: str) -> list[str]:
    return _starting(DEVICES, incomplete)


def precisions(incomplete: str) -> list[str]:
    return _starting(PRECISIONS, incomplete)
