"""--help of every command shows plain metavars and real defaults; the shell completes names."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from adaptir_cli.cli import completion
from adaptir_cli.cli.app import app
from adaptir_cli.restorer import DEFAULT_TILE
from adaptir_cli.tasks import TASKS
from adaptir_cli.weights.manifest import default_manifest

runner = CliRunner()


def _commands(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-command, found by walking the app (new ones are checked too)."""
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def test_every_command_is_walked() -> None:
    assert {("restore",), ("models", "list"), ("experiment", "report")} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "adaptir")
def test_help_shows_no_python_types(command: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    # `<list[Path]>`, `<bool>`, `<int range>`: the markers Typer prints without a metavar.
    assert re.findall(r"<[^\s<>]+>", result.output) == []


def test_restore_help_shows_the_tile_default() -> None:
    result = runner.invoke(app, ["restore", "--help"], env={"COLUMNS": "100"})
    assert f"Default: {DEFAULT_TILE}" in " ".join(result.output.replace("│", " ").split())


def test_completion_functions_offer_the_names() -> None:
    assert completion.tasks("") == list(TASKS)
    assert completion.tasks("sr") == ["sr2", "sr3", "sr4"]
    manifest = default_manifest()
    assert completion.bases("") == list(manifest.bases) and "compactir-default" in completion.bases("compact")
    assert completion.adapters("") == list(manifest.adapters)
    assert completion.devices("c") == ["cpu", "cuda"]
    assert completion.precisions("") == ["auto", "fp32", "bf16"]


@pytest.mark.parametrize(("words", "expected"), [
    ("adaptir restore --task derain", ["derain", "derain-heavy"]),
    ("adaptir bench --device c", ["cpu", "cuda"]),
    ("adaptir finetune --precision b", ["bf16"]),
    ("adaptir restore --base compactir", ["compactir-x1", "compactir-default"]),
    ("adaptir models path emt-x", ["emt-x2", "emt-x3", "emt-x4"]),
])
def test_the_shell_completes_option_values(words: str, expected: list[str]) -> None:
    env = {"_ADAPTIR_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    result = runner.invoke(app, [], env=env, prog_name="adaptir")
    assert result.output.split() == expected
