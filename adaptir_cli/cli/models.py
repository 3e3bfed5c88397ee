"""`adaptir models`: list, fetch, import and inspect base models (the work lives in adaptir_cli.weights)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from adaptir_cli.bases.loading import WeightsError
from adaptir_cli.cli.common import fail, print_json, report_error, split_hint, stderr, usage_error
from adaptir_cli.weights.cache import local_file, status
from adaptir_cli.weights.fetch import fetch, how_to_get
from adaptir_cli.weights.importing import import_weights
from adaptir_cli.weights.manifest import AdapterEntry, BaseEntry, UnknownNameError, default_manifest
from adaptir_cli.weights.resolve import load_base

app = typer.Typer(
    help="List, download, import and inspect the base models adaptir knows.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@contextmanager
def _reported_errors() -> Iterator[None]:
    """Turn library errors into `Error:` / `Hint:` lines: unknown names exit 2, the rest 1."""
    try:
        yield
    except UnknownNameError as error:
        usage_error(*split_hint(error))
    except WeightsError as error:
        fail(*split_hint(error))



def _row(entry: BaseEntry | AdapterEntry) -> dict[str, object]:
    if isinstance(entry, AdapterEntry):
        what = {"kind": "adapter", "base": entry.base, "method": entry.method, "tasks": [entry.task]}
    else:
        what = {"kind": "base", "architecture": entry.architecture, "tasks": list(entry.tasks)}
    return {
        "name": entry.name,
        **what,
        "size": entry.size,
        "license": entry.license,
        "status": status(entry),
        "download": entry.kind,
        "source": entry.source,
        "sha256": entry.sha256,
        "description": entry.description,
    }


def _megabytes(size: object) -> str:
    return f"{size / 1e6:.1f} MB" if isinstance(size, int) else "?"


@app.command("list", epilog="Examples:\n\n  adaptir models list\n\n  adaptir models list --json > models.json")
def list_models(json_out: bool = typer.Option(False, "--json", help="Print the list as JSON on stdout.")) -> None:
    """List the known base models and shipped adapters, what they do, and whether each is installed here."""
    with _reported_errors():
        manifest = default_manifest()
        rows = [_row(entry) for entry in (*manifest.bases.values(), *manifest.adapters.values())]
    if json_out:
        print_json(rows)
        return
    bases = Table("name", "architecture", "tasks", "size", "license", "status", title="Bases")
    adapters = Table("name", "base", "task", "method", "size", "license", "status", title="Adapters (used by default)")
    colours = {"cached": "green", "bundled": "green", "missing": "yellow"}
    for row in rows:
        state = f"[{colours[row['status']]}]{row['status']}[/]"
        if row["status"] == "missing" and row["download"] == "manual":
            state += " (manual download)"
        size, licence = _megabytes(row["size"]), escape(row["license"])
        if row["kind"] == "base":
            bases.add_row(row["name"], row["architecture"], ", ".join(row["tasks"]), size, licence, state)
        else:
            adapters.add_row(row["name"], row["base"], row["tasks"][0], row["method"], size, licence, state)
    Console().print(bases)
    if adapters.row_count:
        Console().print(adapters)


@app.command(
    "fetch",
    epilog="Examples:\n\n  adaptir models fetch emt-x4\n\n  adaptir models fetch emt-x2 emt-x3 emt-x4 lmlt-tiny-x4",
)
def fetch_models(names: list[str] = typer.Argument(..., help="Base model names (see `adaptir models list`).")) -> None:
    """Download base models into the cache, verify their size and sha256, and convert them."""
    with _reported_errors():
        manifest = default_manifest()
        entries = [manifest.base(name) for name in names]  # every name is checked before any download
    failed = []
    for entry in entries:
        if status(entry) != "missing":
            stderr.print(f"{entry.name}: already installed at {local_file(entry)}", highlight=False)
            continue
        try:
            path = fetch(entry.name, manifest, console=stderr)
        except WeightsError as error:
            report_error(*split_hint(error))
            failed.append(entry.name)
            continue
        stderr.print(f"{entry.name}: installed at {path}", highlight=False)
    if failed:
        fail(f"{len(failed)} of {len(entries)} model(s) not installed: {', '.join(failed)}")


@app.command(
    "import",
    epilog=(
        "Examples:\n\n  adaptir models import ipt ~/Downloads/IPT_pretrain.pt\n\n"
        "  adaptir models import emt-x2 EMT_LSR_x2.pth\n\n  adaptir models import ipt-derain my_IPT_derain.pt --force"
    ),
)
def import_model(
    name: str = typer.Argument(..., help="Base model name (see `adaptir models list`)."),
    file: Path = typer.Argument(..., help="The weights file you downloaded."),
    force: bool = typer.Option(False, "--force", help="Import even if the file's sha256 differs from the published one."),
) -> None:
    """Install a weights file you downloaded yourself (IPT is on Google Drive only) under a manifest name."""
    with _reported_errors():
        path = import_weights(name, file, force=force)
    stderr.print(f"{name}: imported {file} to {path}", highlight=False)


@app.command(
    "info",
    epilog="Examples:\n\n  adaptir models info emt-x4\n\n  adaptir models info EMT_LSR_x2.pth --json",
)
def info(
    name_or_file: str = typer.Argument(..., metavar="NAME|FILE", help="An installed base name or a weights file."),
    json_out: bool = typer.Option(False, "--json", help="Print the description as JSON on stdout."),
) -> None:
    """Describe a base: heads and their scales, parameters, sha256 and the inferred configuration."""
    with _reported_errors():
        base = load_base(name_or_file)
    descriptor = base.descriptor
    details = {
        "name": base.name,
        "architecture": descriptor.architecture,
        "source": base.source,
        "sha256": base.sha256,
        "parameters": sum(p.numel() for p in base.module.parameters()),
        "heads": {name: {"scale": head.scale, "index": head.index} for name, head in descriptor.heads.items()},
        "pixel_range": descriptor.pixel_range,
        "min_size": descriptor.min_size,
        "fixed_size": descriptor.fixed_size,
        "size_multiple": descriptor.size_multiple,
        "supports_bf16": descriptor.supports_bf16,
        "mlp_dim": descriptor.mlp_dim,
        "config": descriptor.config,
    }
    if json_out:
        print_json(details)
        return
    console = Console(highlight=False)
    for key, value in details.items():
        if key == "heads":
            value = ", ".join(f"{head} (x{spec['scale']})" for head, spec in details["heads"].items())
        elif key == "config":
            value = ", ".join(f"{k}={v}" for k, v in descriptor.config.items())
        elif key == "parameters":
            value = f"{value:,}"
        console.print(f"{key:>14}: {escape(str(value))}")


@app.command("path", epilog="Examples:\n\n  adaptir models path emt-x4\n\n  ls -l $(adaptir models path emt-x4)")
def show_path(name: str = typer.Argument(..., help="Base model name (see `adaptir models list`).")) -> None:
    """Print where an installed base's weights file is on this machine."""
    with _reported_errors():
        entry = default_manifest().base(name)
    file = local_file(entry)
    if not file.is_file():
        fail(f"base {name} is not installed", escape(how_to_get(entry)))
    typer.echo(str(file))
