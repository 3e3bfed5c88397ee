"""What every command shares: the stderr console, error reporting and exit codes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from adaptir_cli.distributed import Distributed

# Progress and messages go to stderr so that stdout can carry --json for scripts.
stderr = Console(stderr=True)

EXIT_FAILURE = 1
EXIT_USAGE = 2


def report_error(message: str, hint: str | None = None) -> None:
    """Print an error without exiting: a batch reports each failure and fails at the end."""
    # soft_wrap: never break a line inside a path, URL or command the user may copy.
    stderr.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
    if hint:
        stderr.print(f"[yellow]Hint:[/] {hint}", highlight=False, soft_wrap=True)


def split_hint(error: BaseException) -> tuple[str, str | None]:
    """Library messages put their advice on a last "Hint: ..." line; returns both, markup-escaped."""
    message, _, hint = str(error).partition("\nHint: ")
    return escape(message), escape(hint) if hint else None


def fail(message: str, hint: str | None = None, code: int = EXIT_FAILURE) -> NoReturn:
    report_error(message, hint)
    raise typer.Exit(code)


def usage_error(message: str, hint: str | None = None) -> NoReturn:
    fail(message, hint, EXIT_USAGE)


def fail_with(error: BaseException, default_hint: str | None = None, code: int = EXIT_FAILURE) -> NoReturn:
    """Report a library error: its own "Hint:" line if it has one, else `default_hint` (never two)."""
    message, hint = split_hint(error)
    fail(message, hint or default_hint, code)


@contextmanager
def loading_weights(what: str) -> Iterator[None]:
    """A spinner while weights load; an unknown --base is a usage error, a bad file ends the command."""
    from adaptir_cli.weights.manifest import UnknownNameError  # the manifest is not needed by --help

    try:
        with stderr.status(f"Loading {what} ...", spinner="dots"):
            yield
    except UnknownNameError as error:
        message, hint = split_hint(error)
        usage_error(f"--base: {message}", hint)
    except (OSError, ValueError, KeyError) as error:
        fail(*split_hint(error))


def join(device: str) -> "Distributed":
    """This process's place among the processes torchrun started (alone without torchrun).

    A --device that cannot work here is a usage error. Pair it with `leave` once the results are out.
    """
    from adaptir_cli.distributed import setup  # torch is not needed by --help
    from adaptir_cli.runtime import RuntimeChoiceError

    try:
        return setup(device)
    except RuntimeChoiceError as error:
        usage_error(str(error))


def leave(context: "Distributed") -> None:
    """Wait for every process, then leave the group.

    The first process holds every process's results, prints them and exits with the run's code;
    the others exit 0 once it has printed. Were they to exit with an error too, torchrun would stop
    the first process with SIGTERM as soon as one of them did, and report that as well.
    """
    from adaptir_cli.distributed import barrier, shutdown

    barrier(context)
    shutdown(context)


def print_json(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()


def show_tracebacks() -> bool:
    """ADAPTIR_DEBUG=1 lets unexpected errors surface with their traceback."""
    return os.environ.get("ADAPTIR_DEBUG", "") not in ("", "0")
