"""`adaptir models`: list, fetch, import and inspect base models (the work lives in adaptir_cli.weights)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from adaptir_cli.adapters import AdapterFile, is_adapter_file, read_adapter
from adaptir_cli.bases.loading import WeightsError, sha256_file
from adaptir_cli.bases.model import LoadedBase
from adaptir_cli.cli import completion as complete
from adaptir_cli.cli.common import fail, print_json, report_error, split_hint, stderr, usage_error
from adaptir_cli.cli.help_format import Typer
from adaptir_cli.weights.cache import local_file, status
from adaptir_cli.weights.fetch import fetch, how_to_get
from adaptir_cli.weights.importing import import_weights
from adaptir_cli.weights.manifest import AdapterEntry, BaseEntry, Manifest, UnknownNameError, default_manifest
from adaptir_cli.weights.resolve import adapter_file, load_base

app = Typer(
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



def _row(entry: BaseEntry | AdapterEntry, manifest: Manifest) -> dict[str, object]:
    if isinstance(entry, AdapterEntry):
        what = {"kind": "adapter", "base": entry.base, "method": entry.method, "tasks": [entry.task]}
        default_for = [entry.task] if manifest.defaults.get(entry.task) == entry.base else []
    else:
        what = {"kind": "base", "architecture": entry.architecture, "tasks": list(entry.tasks)}
        default_for = [task for task, name in manifest.defaults.items() if name == entry.name]
    return {
        "name": entry.name,
        **what,
        "default_for": default_for,
        "size": entry.size,
        "license": entry.license,
        "status": status(entry),
        "download": entry.kind,
        "source": entry.source,
        "sha256": entry.sha256,
        "description": entry.description,
    }


def _table(title: str, columns: dict[str, list[str]], wrap: str = "") -> Table:
    """Identifiers are never wrapped or cut (names differ only at their end, and get copied): each such
    column is as wide as its longest value; only the `wrap` column (a list of words) wraps."""
    return Table(
        *(Column(header, no_wrap=header != wrap, min_width=None if header == wrap else max(map(len, values), default=0))
          for header, values in columns.items()),
        title=title,
    )


@app.command("list", epilog="Examples:\n\n  adaptir models list\n\n  adaptir models list --json > models.json")
def list_models(json_out: bool = typer.Option(False, "--json", help="Print the list as JSON on stdout.")) -> None:
    """List the known base models and shipped adapters, what they do, and whether each is installed here."""
    with _reported_errors():
        manifest = default_manifest()
        rows = [_row(entry, manifest) for entry in (*manifest.bases.values(), *manifest.adapters.values())]
    if json_out:
        print_json(rows)
        return
    defaults = _table("What serves each task without --base", {
        "task": list(manifest.defaults), "base": list(manifest.defaults.values()),
        "adapter": [entry.name for entry in manifest.adapters.values()],
    })
    for task, name in manifest.defaults.items():
        shipped = manifest.adapter_for(name, task)
        defaults.add_row(task, name, shipped.name if shipped else "[dim]the base's own head[/]")
    # Licences, sizes and sources are in `--json`: at 80 columns the tables keep what tells the
    # entries apart.
    bases = _table("Bases", {"name": list(manifest.bases), "arch": [], "tasks": [], "status": []}, wrap="tasks")
    adapters = _table("Adapters (used by default)", {
        "name": list(manifest.adapters), "base": [a.base for a in manifest.adapters.values()],
        "task": [a.task for a in manifest.adapters.values()], "status": [],
    })
    colours = {"cached": "green", "bundled": "green", "missing": "yellow"}
    for row in rows:
        state = f"[{colours[row['status']]}]{row['status']}[/]"
        if row["status"] == "missing" and row["download"] == "manual":
            state += " (manual download)"
        if row["kind"] == "base":
            bases.add_row(row["name"], row["architecture"], " ".join(row["tasks"]), state)
        else:
            adapters.add_row(row["name"], row["base"], row["tasks"][0], state)
    Console().print(bases)
    if adapters.row_count:
        Console().print(adapters)
    Console().print(defaults)


@app.command(
    "fetch",
    epilog="Examples:\n\n  adaptir models fetch emt-x4\n\n  adaptir models fetch emt-x2 emt-x3 emt-x4 lmlt-tiny-x4",
)
def fetch_models(
    names: list[str] = typer.Argument(
        ..., metavar="NAME...", help="Base model names (see `adaptir models list`).", autocompletion=complete.bases
    ),
) -> None:
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
    name: str = typer.Argument(
        ..., help="Base model name (see `adaptir models list`).", metavar="NAME", autocompletion=complete.bases,
    ),
    file: Path = typer.Argument(..., help="The weights file you downloaded.", metavar="FILE"),
    force: bool = typer.Option(False, "--force", help="Import even if the file's sha256 differs from the published one."),
) -> None:
    """Install a weights file you downloaded yourself (IPT is on Google Drive only) under a manifest name."""
    with _reported_errors():
        path = import_weights(name, file, force=force)
    stderr.print(f"{name}: imported {file} to {path}", highlight=False)


@app.command(
    "info",
    epilog=(
        "Examples:\n\n  adaptir models info emt-x4\n\n  adaptir models info EMT_LSR_x2.pth --json\n\n"
        "  adaptir models info compactir-default-derain\n\n  adaptir models info my-adapter.safetensors"
    ),
)
def info(
    name_or_file: str = typer.Argument(
        ..., metavar="NAME|FILE", help="A base or adapter name from `adaptir models list`, or a weights or adapter file."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the description as JSON on stdout."),
) -> None:
    """Describe a base (heads, parameters, sha256, configuration) or an adapter (method, task, base, training)."""
    with _reported_errors():
        file = adapter_file(name_or_file)
        details = _adapter_details(read_adapter(file)) if is_adapter_file(file) else _base_details(load_base(name_or_file))
    if json_out:
        print_json(details)
        return
    console = Console(highlight=False)
    width = max(map(len, details))
    for key, value in details.items():
        if key == "heads":
            value = ", ".join(f"{head} (x{spec['scale']})" for head, spec in value.items())
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif key in ("parameters", "base_parameters"):
            value = f"{value:,}"
        console.print(f"{key:>{width}}: {escape(str(value))}")


def _base_details(base: LoadedBase) -> dict[str, object]:
    descriptor = base.descriptor
    return {
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
        "tile_overlap": descriptor.tile_overlap,
        "supports_bf16": descriptor.supports_bf16,
        "mlp_dim": descriptor.mlp_dim,
        "config": descriptor.config,
    }


def _adapter_details(adapter: AdapterFile) -> dict[str, object]:
    training = adapter.training or {}
    summary = {key: training[key] for key in ("steps", "batch", "patch", "lr", "seconds") if key in training}
    if training.get("final_validation"):
        summary["validation"] = {
            key: round(value, 4) if isinstance(value, float) else value for key, value in training["final_validation"].items()
        }
    return {
        "file": str(adapter.path),
        "sha256": sha256_file(adapter.path),
        "method": adapter.method,
        "method_config": dataclasses.asdict(adapter.config),
        "task": adapter.task,
        "scale": adapter.scale,
        "base": adapter.base_name,
        "base_sha256": adapter.base_sha256,
        "base_architecture": adapter.base_architecture,
        # Trainable parameters as training counted them; the file also holds BatchNorm statistics.
        "parameters": training.get("trainable_parameters", sum(tensor.numel() for tensor in adapter.state.values())),
        "training": summary,
    }


@app.command("path", epilog="Examples:\n\n  adaptir models path emt-x4\n\n  ls -l $(adaptir models path emt-x4)")
def show_path(
    name: str = typer.Argument(
        ..., metavar="NAME", help="Base model name (see `adaptir models list`).", autocompletion=complete.bases
    ),
) -> None:
    """Print where an installed base's weights file is on this machine."""
    with _reported_errors():
        entry = default_manifest().base(name)
    file = local_file(entry)
    if not file.is_file():
        fail(f"base {name} is not installed", escape(how_to_get(entry)))
    typer.echo(str(file))
