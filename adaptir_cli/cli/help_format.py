"""Help that shows what to type: plain metavars, and no Python types.

Typer prints each parameter's Python type (`<list[str]>`, `<int range>`, and `<bool>` even for a
flag that takes no value). Options with a value carry their own metavar where they are declared
(FILE, N, TASK), which Typer shows instead; these classes drop the type of flags (--help included,
which no declaration reaches) and of arguments, whose metavar is already their name in the help.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


def _no_type(ctx: Any) -> None:
    return None


class _NoPythonTypes:
    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
            elif param.param_type_name == "argument":
                # Typer has no setting for this: the instance's own method replaces the class's.
                param.display_type_rich = _no_type
        return params


class Command(_NoPythonTypes, TyperCommand):
    """A command whose help shows no Python types."""


class Group(_NoPythonTypes, TyperGroup):
    """A command group whose help shows no Python types."""


class Typer(typer.Typer):
    """typer.Typer whose group and commands use the classes above."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(cls=Group, **settings)

    def command(self, *args: Any, **settings: Any) -> Any:
        settings.setdefault("cls", Command)
        return super().command(*args, **settings)
