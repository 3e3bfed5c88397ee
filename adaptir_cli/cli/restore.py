"""`adaptir restore`: restore files and folders with a base, a task and (optionally) adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dataclasses import replace

from adaptir_cli.bases.loading import WeightsError
from adaptir_cli.batch import JobPlanError, JobResult, plan_jobs, run_jobs
from adaptir_cli.cli.common import fail, print_json, split_hint, stderr, usage_error
from adaptir_cli.restorer import Restorer, TileSettings
from adaptir_cli.tasks import TASKS, UnknownTaskError, get_task
from adaptir_cli.weights.resolve import default_adapter, load_base, load_default_base

EXAMPLES = """
Examples:

  adaptir restore photo.png out/ --task sr2

  adaptir restore photo.png out/ --task sr4 --base emt-x4

  adaptir restore noisy/ out/ --task denoise --recursive --ext png

  adaptir restore a.png b.png out/ --task sr4 --task lr4-noise30 --adapter '' --adapter lr4n30.safetensors

  adaptir restore big.tif out/ --task sr2 --base emt-x2 --tile 192 --device cuda --json > summary.json
"""


def restore(
    paths: list[Path] = typer.Argument(..., help="Input files or folders, then the output folder.", show_default=False),
    task: list[str] = typer.Option(
        ..., "--task", "-t", help=f"Task ({', '.join(TASKS)}); repeat once per input to mix tasks."
    ),
    base: Optional[str] = typer.Option(None, "--base", "-b", help="Base model: a name from `adaptir models list` or a weights file."),
    adapter: list[str] = typer.Option(
        [], "--adapter", "-a",
        help="Adapter .safetensors file; repeat once per input ('' for none). Default: the adapter shipped for the task, if any.",
    ),
    tile: Optional[int] = typer.Option(None, help="Tile size in input pixels (0: whole image). Default: the base's."),
    overlap: Optional[int] = typer.Option(None, help="Overlap between tiles in input pixels. Default: the base's."),
    batch: Optional[int] = typer.Option(None, min=1, help="Tiles run together on the device. Default: 1 on a CPU, 4 on CUDA."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("auto", help="auto (bf16 on CUDA where the base allows it), fp32 or bf16."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders (the tree is mirrored)."),
    suffix: str = typer.Option("", help="Appended to each output file name, before the extension."),
    ext: Optional[str] = typer.Option(None, help="Output format by extension (png, tif, jpg, webp); default: the input's."),
    overwrite: bool = typer.Option(False, help="Replace outputs that exist (default: skip them)."),
    force: bool = typer.Option(False, help="Load adapters trained on another base anyway."),
    json_out: bool = typer.Option(False, "--json", help="Print a machine-readable summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Restore images: load the base once, switch adapters per task, tile on CPU or CUDA."""
    if len(paths) < 2:
        usage_error("give at least one input and the output folder", "adaptir restore INPUT... OUTPUT_DIR --task T")
    *inputs, output_dir = paths
    if output_dir.is_file():
        usage_error(f"the last argument must be the output folder, but {output_dir} is a file")
    try:
        for name in task:
            get_task(name)
        jobs = plan_jobs(
            inputs, output_dir, task, [Path(a) if a else None for a in adapter],
            recursive=recursive, suffix=suffix, ext=ext,
        )
    except (JobPlanError, UnknownTaskError) as error:
        usage_error(str(error))
    if not jobs:
        fail("no images found in the inputs", "pass image files, or folders holding them (--recursive for sub-folders)")

    restorer = load_restorer(base, device, precision)
    if not adapter:  # nothing given: each task gets the adapter the project ships for it, if any
        try:
            jobs = [replace(job, adapter=default_adapter(restorer.base, job.task)) for job in jobs]
        except WeightsError as error:
            fail(*split_hint(error))
    for pair in dict.fromkeys((job.task, job.adapter) for job in jobs):
        try:  # check every task/adapter pair against the base before the first image
            restorer.use(*pair, force=force)
        except Exception as error:
            fail(str(error), "see `adaptir restore --help`")
    settings = TileSettings(tile=tile, overlap=overlap, batch=batch)
    results = _run(restorer, jobs, settings, overwrite=overwrite, force=force, quiet=quiet)

    failed = [r for r in results if r.status == "failed"]
    if json_out:
        print_json({
            "base": restorer.base.name,
            "base_sha256": restorer.base.sha256,
            "device": str(restorer.device),
            "precision": restorer.precision,
            "ok": sum(r.status == "ok" for r in results),
            "skipped": sum(r.status == "skipped" for r in results),
            "failed": len(failed),
            "images": [r.to_json() for r in results],
        })
    if failed:
        stderr.print(f"[red]{len(failed)} of {len(results)} images failed.[/]")
        raise typer.Exit(1)


def load_restorer(base: str | None, device: str, precision: str) -> Restorer:
    """The base named by --base (default: the bundled one) on its device; errors end the command."""
    try:
        with stderr.status(f"Loading {base or 'the default base'} ...", spinner="dots"):
            loaded = load_default_base() if base is None else load_base(base)
            return Restorer(loaded, device=device, precision=precision)
    except (OSError, ValueError, KeyError) as error:
        fail(*split_hint(error))


def _run(restorer: Restorer, jobs, settings: TileSettings, *, overwrite: bool, force: bool, quiet: bool) -> list[JobResult]:
    results: list[JobResult] = []
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=stderr, disable=quiet, transient=False,
    )
    with progress:
        files = progress.add_task("images", total=len(jobs))
        tiles = progress.add_task("tiles", total=None, visible=False)

        def on_image(job) -> None:
            progress.update(tiles, description=f"  {job.source.name}", completed=0, total=None, visible=True)

        def on_tile(done: int, total: int) -> None:
            progress.update(tiles, completed=done, total=total)

        for result in run_jobs(
            restorer, jobs, settings, overwrite=overwrite, force=force, on_image=on_image, on_tile=on_tile
        ):
            results.append(result)
            progress.advance(files)
            if result.status == "failed":
                progress.console.print(f"[red]failed[/] {result.job.source}: {result.error}", highlight=False)
            elif result.status == "skipped" and not quiet:
                progress.console.print(f"[dim]skipped {result.job.source}: {result.error}[/]", highlight=False)
            for note in result.stats.notes:
                progress.console.print(f"[yellow]{result.job.source.name}: {note}[/]", highlight=False)
        progress.update(tiles, visible=False)
    return results
