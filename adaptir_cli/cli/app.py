"""The `adaptir` command: a thin Typer layer over the library."""

from __future__ import annotations

from typing import Optional

import typer

from adaptir_cli import __version__
from adaptir_cli.cli import bench, compare, experiment, finetune, models, pretrain, restore
from adaptir_cli.cli.common import show_tracebacks, stderr
from adaptir_cli.cli.help_format import Typer

app = Typer(
    name="adaptir",
    help="Restore images with a frozen transformer base and hot-swappable AdaptIR adapters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("restore", epilog=restore.EXAMPLES)(restore.restore)
app.command("bench", epilog=bench.EXAMPLES)(bench.bench)
app.command("finetune", epilog=finetune.EXAMPLES)(finetune.finetune)
app.command("pretrain", epilog=pretrain.EXAMPLES)(pretrain.pretrain)
app.command("compare", epilog=compare.EXAMPLES)(compare.compare)
app.add_typer(models.app, name="models")
app.add_typer(experiment.app, name="experiment")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"adaptir {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Restore images with a frozen transformer base and hot-swappable AdaptIR adapters."""


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        stderr.print("[yellow]Interrupted.[/]")
        raise SystemExit(130) from None
    except Exception as error:  # anything the commands did not turn into a message
        if show_tracebacks():
            raise
        stderr.print(f"[bold red]Error:[/] {type(error).__name__}: {error}", highlight=False)
        stderr.print("[yellow]Hint:[/] rerun with ADAPTIR_DEBUG=1 for the traceback, and report it.")
        raise SystemExit(1) from None
