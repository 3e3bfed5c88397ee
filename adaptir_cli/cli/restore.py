"""`adaptir restore`: restore files and folders with a base, a task and (optionally) adapters."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adaptir_cli.api import Restorers, check_plan, gather_results, plan_restore, shares
from adaptir_cli.cli import auto_choice
from adaptir_cli.cli import completion as complete
from adaptir_cli.cli import run_options
from adaptir_cli.cli.common import (
    fail, fail_with, join, leave, loading_weights, print_json, split_hint, stderr, usage_error,
)
from adaptir_cli.cli.run_options import (
    TILE_HELP,
    check_output_folder,
    check_quality,
    check_run_options,
    resolve_adapters,
    size_limit,
)
from adaptir_cli.distributed import launched_world
from adaptir_cli.file_jobs import STDIO, Job, JobPlanError, JobResult, names_one_image, plan_jobs, run_jobs
from adaptir_cli.imaging.formats import DEFAULT_QUALITY
from adaptir_cli.restorer import Restorer, TileSettings, TileSettingsError
from adaptir_cli.tasks import AUTO, TASKS, UnknownTaskError, get_task

EXAMPLES = """
Examples:

  adaptir restore photo.png out/ --task sr2

  adaptir restore photo.png photo_x2.jpg --task sr2 --quality 90

  adaptir restore - - --task denoise < noisy.png > clean.png

  adaptir restore photo.png out/ --task sr4 --base lmlt-tiny-x4

  adaptir restore noisy/ out/ --task denoise --recursive --ext png

  adaptir restore photos/ out/ --task auto

  adaptir restore a.png b.png out/ --task sr4 --task lr4-noise30 --adapter '' --adapter lr4n30.safetensors

  adaptir restore big.tif out/ --task sr2 --base emt-x2 --tile 192 --device cuda --json > summary.json

  torchrun --nproc-per-node 4 -m adaptir_cli restore photos/ out/ --task sr4 --json > summary.json
"""


def restore(
    paths: list[Path] = typer.Argument(
        ..., metavar="INPUT... OUTPUT", show_default=False,
        help="Input files or folders, then the output folder; for one input, OUTPUT may name the image file "
        "(result.png). '-' reads standard input / writes standard output.",
    ),
    task: list[str] = typer.Option(
        ..., "--task", "-t", help=f"Task ({', '.join(TASKS)}), or {AUTO}: chosen per image by a small classifier "
        "(docs/auto-task.md); repeat once per input to mix tasks.", metavar="TASK",
        autocompletion=complete.restore_tasks,
    ),
    base: Optional[str] = typer.Option(
        None, "--base", "-b",
        help="Base model: a name from `adaptir models list` or a weights file. Default: the task's (`adaptir models list`).",
        metavar="NAME|FILE", autocompletion=complete.bases,
    ),
    adapter: list[str] = typer.Option(
        [], "--adapter", "-a",
        help="Adapter: a name from `adaptir models list` or a .safetensors file; repeat once per input ('' for none). "
        "Default: the adapter shipped for the task's base, if any.", metavar="NAME|FILE",
        autocompletion=complete.adapters,
    ),
    tile: Optional[int] = typer.Option(None, help=TILE_HELP, metavar="N"),
    overlap: Optional[int] = run_options.OVERLAP,
    batch: Optional[int] = run_options.BATCH,
    device: str = run_options.DEVICE,
    precision: str = run_options.PRECISION,
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders (the tree is mirrored)."),
    suffix: str = typer.Option("", help="Appended to each output file name, before the extension.", metavar="TEXT"),
    ext: Optional[str] = typer.Option(
        None, help="Output format by extension (png, tif, jpg, webp); default: the input's (PNG on standard output).",
        metavar="EXT",
    ),
    quality: int = typer.Option(DEFAULT_QUALITY, help="JPEG and WebP quality, 1..100.", metavar="N"),
    overwrite: bool = typer.Option(False, help="Replace outputs that exist (default: skip complete ones)."),
    force: bool = run_options.FORCE,
    max_megapixels: float = run_options.MAX_MEGAPIXELS,
    json_out: bool = typer.Option(False, "--json", help="Print a machine-readable summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Restore images: each base loaded once, adapters switched per task, tiled on CPU or CUDA."""
    if len(paths) < 2:
        usage_error("give at least one input and the output", "adaptir restore INPUT... OUTPUT --task T")
    *inputs, output = paths
    if output.is_file() and not names_one_image(output):
        usage_error(f"the last argument must be the output folder or image file, but {output} is another file")
    _check_standard_streams(inputs, output, json_out)
    check_run_options(tile=tile, overlap=overlap, device=device, precision=precision, max_megapixels=max_megapixels)
    check_quality(quality)
    adapters = resolve_adapters(adapter)
    try:
        for name in task:
            if name != AUTO:
                get_task(name)
        jobs = plan_jobs(inputs, output, task, adapters, recursive=recursive, suffix=suffix, ext=ext)
    except (JobPlanError, UnknownTaskError) as error:
        usage_error(*split_hint(error))
    if not jobs:
        fail("no images found in the inputs", "pass image files, or folders holding them (--recursive for sub-folders)")
    if output != STDIO:
        check_output_folder(output.parent if names_one_image(output) else output)
    context = join(device)  # under torchrun each process restores its share of the images
    # --task auto: each such image gets its task (and so its base) before the bases load.
    runnable, choices, unreadable = auto_choice.choose(
        jobs, max_megapixels=size_limit(max_megapixels), quiet=quiet or not context.main, context=context,
    )
    for result in unreadable if context.main else []:
        _report(stderr, result, quiet)

    restorers = Restorers(base, device=str(context.device), precision=precision)
    with loading_weights("the bases"):  # each task's base (--base, else the task's default), each loaded once
        groups = plan_restore(runnable, restorers, use_defaults=not adapter)
    settings = TileSettings(tile=tile, overlap=overlap, batch=batch)
    try:  # every base's tiles and task/adapter pairs, before the first image
        check_plan(groups, settings, force=force)
    except TileSettingsError as error:
        usage_error(str(error))
    except Exception as error:
        fail_with(error, "see `adaptir restore --help`")
    if context.active and context.main and not quiet:
        stderr.print(f"{len(jobs)} images shared among {context.world} processes; the progress shown is process 0's share.")
    mine = _run(
        shares(groups, context), settings, overwrite=overwrite, force=force, max_megapixels=size_limit(max_megapixels),
        quality=quality, quiet=quiet or not context.main,
    )
    results = gather_results(unreadable + mine if context.main else mine, jobs, context)

    failed = [r for r in results if r.status == "failed"]
    if json_out and context.main:
        base_of = {job.output: restorer.base.name for restorer, group in groups for job in group}
        print_json({
            "bases": [
                {"name": r.base.name, "sha256": r.base.sha256, "device": str(r.device), "precision": r.precision}
                for r, _ in groups
            ],
            "ok": sum(r.status == "ok" for r in results),
            "skipped": sum(r.status == "skipped" for r in results),
            "failed": len(failed),
            "images": [
                {**r.to_json(), "base": base_of.get(r.job.output), **auto_choice.to_json(choices, r.job.output)}
                for r in results
            ],
            "processes": context.world,
        })
    if failed and context.main:
        stderr.print(f"[red]{len(failed)} of {len(results)} images failed.[/]")
    leave(context)
    if failed and context.main:  # torchrun's exit code is the first process's (see `leave`)
        raise typer.Exit(1)


def _check_standard_streams(inputs: list[Path], output: Path, json_out: bool) -> None:
    """'-' needs a pipe or a file on its stream: image bytes on a terminal help nobody."""
    if launched_world() > 1 and STDIO in (*inputs, output):
        usage_error("standard input or output (-) cannot be shared among torchrun's processes", "name files or folders")
    if STDIO in inputs and sys.stdin.isatty():
        usage_error("standard input (-) is a terminal", "pipe an image in: adaptir restore - OUTPUT --task T < photo.png")
    if output == STDIO:
        if json_out:
            usage_error("--json prints on standard output, which carries the image (-)", "name an output file instead of -")
        if sys.stdout.isatty():
            usage_error("standard output (-) is a terminal", "redirect it to a file: ... - --task T > result.png")


def _run(
    groups: list[tuple[Restorer, list[Job]]], settings: TileSettings, *, overwrite: bool, force: bool,
    max_megapixels: float | None, quality: int, quiet: bool,
) -> list[JobResult]:
    """Run each base's jobs in turn under one progress display."""
    results: list[JobResult] = []
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=stderr, disable=quiet, transient=False,
    )
    with progress:
        files = progress.add_task("images", total=sum(len(jobs) for _, jobs in groups))
        tiles = progress.add_task("tiles", total=None, visible=False)

        def on_image(job: Job) -> None:
            progress.update(tiles, description=f"  {job.source.name}", completed=0, total=None, visible=True)

        def on_tile(done: int, total: int) -> None:
            progress.update(tiles, completed=done, total=total)

        for restorer, jobs in groups:
            for result in run_jobs(
                restorer, jobs, settings, overwrite=overwrite, force=force, max_megapixels=max_megapixels,
                quality=quality, on_image=on_image, on_tile=on_tile,
            ):
                results.append(result)
                progress.advance(files)
                _report(progress.console, result, quiet)
        progress.update(tiles, visible=False)
    return results


def _report(console: Console, result: JobResult, quiet: bool) -> None:
    if result.status == "failed":
        console.print(f"[red]failed[/] {escape(f'{result.job.source}: {result.error}')}", highlight=False)
    elif result.status == "skipped" and not quiet:
        console.print(f"[dim]skipped {escape(f'{result.job.source}: {result.error}')}[/]", highlight=False)
    for note in result.stats.notes:
        console.print(f"[yellow]{escape(f'{result.job.source.name}: {note}')}[/]", highlight=False)
