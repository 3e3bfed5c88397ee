"""`adaptir bench`: the papers' evaluation protocol on standard test sets, or restore speed."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adaptir_cli.adapters import AdapterFileError
from adaptir_cli.api import Restorers
from adaptir_cli.bench.protocol import Protocol, ProtocolError, make_protocol
from adaptir_cli.bench.render import bench_to_json, print_bench, print_speed, speed_to_json, write_csv, write_json
from adaptir_cli.bench.runner import (
    BenchError,
    BenchResult,
    Contender,
    Failure,
    admit,
    check_dataset,
    merge_results,
    plan_methods,
    run_benchmark,
    run_speed,
)
from adaptir_cli.cli import completion as complete
from adaptir_cli.cli import run_options
from adaptir_cli.cli.common import fail, fail_with, join, leave, loading_weights, split_hint, stderr, usage_error
from adaptir_cli.cli.run_options import (
    resolve_adapters,
    check_run_options,
    check_tiles,
    size_limit,
)
from adaptir_cli.data.datasets import DATASETS, Dataset, DatasetError, PairLayout, find_dataset
from adaptir_cli.data.degradations import Degradation
from adaptir_cli.distributed import Distributed, gather, launched_world, share
from adaptir_cli.restorer import Restorer, TileSettings
from adaptir_cli.tasks import TASKS, UnknownTaskError, get_task

_PIPE_WIDTH = 140

EXAMPLES = """
Examples:

  adaptir bench --task sr2 --dataset Set5 --dataset Set14 --base emt-x2 --json results.json

  adaptir bench --task sr4 --dataset Set5 --data ~/datasets --base emt-x4 --baseline

  adaptir bench --task lr4-noise30 --dataset B100 --base emt-x4 --adapter '' --adapter lr4n30.safetensors

  adaptir bench --task denoise --sigma 25 --dataset CBSD68 --baseline --csv cbsd68.csv

  adaptir bench --task derain --dataset my_rain/ --pairs 'rainy/{id}.png,clean/{id}.png' --baseline

  adaptir bench --task sr4 --base emt-x4 --speed --size 320x240 --repeats 10

  torchrun --nproc-per-node 4 -m adaptir_cli bench --task sr4 --dataset B100 --json results.json
"""


def bench(
    task: str = typer.Option(
        ..., "--task", "-t", help=f"Task ({', '.join(TASKS)}).", metavar="TASK", autocompletion=complete.tasks,
    ),
    dataset: list[str] = typer.Option(
        [], "--dataset", "-d", help=f"A test set ({', '.join(DATASETS)}) or a folder of images; repeatable.",
        metavar="SET|DIR",
    ),
    data: Optional[Path] = typer.Option(
        None, help="Folder holding the test sets (searched before $ADAPTIR_DATA and the cache).", metavar="DIR",
    ),
    pairs: Optional[str] = typer.Option(
        None, help="Input/target file templates of a custom pair set: 'LQ_TEMPLATE,GT_TEMPLATE' with {id}.",
        metavar="LQ,GT",
    ),
    base: Optional[str] = typer.Option(
        None, "--base", "-b",
        help="Base model: a name from `adaptir models list` or a weights file. Default: the one restore uses for --task.",
        metavar="NAME|FILE", autocompletion=complete.bases,
    ),
    adapter: list[str] = typer.Option(
        [], "--adapter", "-a",
        help="Adapter: a name from `adaptir models list` or a file; repeat to compare (one column each; '' for the "
        "bare base, on lr4-noise30 and the like its head alone). Default: the one restore uses.",
        metavar="NAME|FILE", autocompletion=complete.adapters,
    ),
    force: bool = run_options.FORCE,
    sigma: Optional[float] = typer.Option(None, help="Noise level (0..255 scale) for --task denoise.", metavar="SIGMA"),
    seed: int = typer.Option(
        0, help="Seed of the noise and synthetic degradations (image i uses seed + i).", metavar="N",
    ),
    baseline: bool = typer.Option(False, help="Also score the degraded input itself (bicubic up-scaling for SR)."),
    baseline_only: bool = typer.Option(
        False, "--baseline-only", help="Score only the degraded input (bicubic for SR); no base is loaded."
    ),
    json_file: Optional[Path] = typer.Option(
        None, "--json", help="Write all results, per image, to this JSON file ('-': stdout).", metavar="FILE",
    ),
    csv_file: Optional[Path] = typer.Option(
        None, "--csv", help="Write per-image and mean values to this CSV file.", metavar="FILE",
    ),
    save_images: Optional[Path] = typer.Option(None, help="Save the scored images to DIR/SET/METHOD/.", metavar="DIR"),
    speed: bool = typer.Option(False, help="Time restore only, on a random image of --size."),
    size: str = typer.Option("256x256", help="Input size WxH for --speed.", metavar="WxH"),
    repeats: int = typer.Option(5, min=1, help="Timed runs for --speed (after one warm-up run).", metavar="N"),
    tile: int = typer.Option(
        0, min=0, help="Tile size in input pixels; 0 (default) runs whole images, as papers do.", metavar="N",
    ),
    overlap: Optional[int] = run_options.OVERLAP,
    batch: Optional[int] = run_options.BATCH,
    device: str = run_options.DEVICE,
    precision: str = run_options.PRECISION,
    max_megapixels: float = run_options.MAX_MEGAPIXELS,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Score a base and its adapters with the papers' protocol (PSNR/SSIM, Y or RGB, crop), or time restore."""
    try:
        chosen = get_task(task)
        protocol, degradation = make_protocol(task, sigma, seed)
    except (UnknownTaskError, ProtocolError) as error:
        usage_error(str(error))
    check_run_options(tile=tile, overlap=overlap, device=device, precision=precision, max_megapixels=max_megapixels)
    settings = TileSettings(tile=tile, overlap=overlap, batch=batch)
    if baseline_only and (base is not None or adapter):
        usage_error("--baseline-only loads no base: drop --base and --adapter, or use --baseline beside them")
    if speed:
        if launched_world() > 1:
            usage_error("--speed times one process; run it without torchrun")
        if dataset or baseline or baseline_only or csv_file or save_images:
            usage_error(
                "--speed times restore on a random image; drop --dataset, --baseline, --csv and --save-images"
            )
        shape = _parse_size(size)
        restorer, adapters = _model(task, base, adapter, device, precision, settings)
        methods = _methods(
            adapters, restorer, baseline=False, scale=chosen.scale, task=task, bare=bool(adapter), force=force,
        )
        with stderr.status("Timing restore ...", spinner="dots"):
            report = run_speed(restorer, task, methods, shape, repeats=repeats, settings=settings, seed=seed)
        print_speed(_results_console(json_file), report)
        if json_file is not None:
            write_json(json_file, speed_to_json(report))
        return

    if not dataset:
        usage_error("give at least one --dataset", f"a test set ({', '.join(DATASETS)}) or a folder of images")
    try:
        layout = PairLayout.parse(pairs) if pairs else None
        sets = [find_dataset(name, data, layout) for name in dataset]
        for found in sets:
            check_dataset(found, protocol)
    except DatasetError as error:
        fail(str(error))

    context = join(device)  # under torchrun each process scores its share of the images
    restorer, adapters = (
        (None, []) if baseline_only else _model(task, base, adapter, str(context.device), precision, settings)
    )
    methods = _methods(
        adapters, restorer, baseline=baseline or baseline_only, scale=chosen.scale, task=task, bare=bool(adapter),
        force=force,
    )
    mine = _run(sets, protocol, degradation, methods, restorer, settings, save_images, size_limit(max_megapixels),
                quiet or not context.main, context)
    result = merge_results(gather(mine, context), sets)
    if context.main:
        print_bench(_results_console(json_file), result)
        if json_file is not None:
            write_json(json_file, bench_to_json(result))
        if csv_file is not None:
            write_csv(csv_file, result)
        if result.failures:
            stderr.print(f"[red]{result.failures} image/method runs failed; their images are left out of the means.[/]")
    leave(context)
    if result.failures and context.main:  # torchrun's exit code is the first process's (see `leave`)
        raise typer.Exit(1)


def _model(
    task: str, base: str | None, adapter: list[str], device: str, precision: str, settings: TileSettings
) -> tuple[Restorer, list[Path | None]]:
    """The base and adapters to score: what `adaptir restore` would use unless --base/--adapter say otherwise."""
    adapters = resolve_adapters(adapter)
    restorers = Restorers(base, device=device, precision=precision)
    with loading_weights(str(base or f"the base for {task}")):
        restorer = restorers.for_task(task)
        adapters = adapters if adapter else [restorers.adapter(task)]
    check_tiles(restorer, settings)
    return restorer, adapters


def _methods(
    adapters: list[Path | None], restorer: Restorer | None, *, baseline: bool, scale: int, task: str, bare: bool,
    force: bool = False,
) -> list[Contender]:
    """The columns, each checked against the base before the first image. `bare`: an --adapter ''
    asked for the bare base, which on a task that needs an adapter is its head alone. `force`:
    --force, adapters trained for another task or base run anyway."""
    try:
        methods = plan_methods(adapters, restorer=restorer, baseline=baseline, scale=scale)
    except (AdapterFileError, OSError, BenchError) as error:
        fail_with(error)
    if restorer is None:
        return methods
    admitted = []
    for method in methods:
        try:
            admitted.append(method if method.kind == "baseline" else admit(
                method, restorer, task, bare=bare and method.kind == "base", force=force,
            ))
        except Exception as error:  # every mismatch (head, scale, adapter base, task) ends the same way
            message, hint = split_hint(error)
            fail(f"{method.label}: {message}", hint or "see `adaptir bench --help`")
    return admitted


def _run(
    sets: list[Dataset], protocol: Protocol, degradation: Degradation, methods: list[Contender], restorer: Restorer | None,
    settings: TileSettings, save_images: Path | None, max_megapixels: float | None, quiet: bool, context: Distributed,
) -> BenchResult:
    """This process's share of the images (all of them alone), under a progress display."""
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=stderr, disable=quiet,
    )
    with progress:
        bar = progress.add_task("images", total=sum(len(share(s.images, context)) for s in sets))

        def on_image(dataset: str, image: str, failures: list[Failure]) -> None:
            progress.update(bar, advance=1, description=f"{dataset} {image}")
            for failure in failures:
                where = f" ({failure.method})" if failure.method else ""
                progress.console.print(f"[red]failed[/] {dataset}/{failure.image}{where}: {failure.error}", highlight=False)

        return run_benchmark(sets, protocol, degradation, methods, restorer, settings, save_images=save_images,
                             on_image=on_image, max_megapixels=max_megapixels, context=context)


def _results_console(json_file: Path | None) -> Console:
    """Tables go to stdout, unless stdout carries the JSON."""
    if json_file is not None and str(json_file) == "-":
        return stderr
    # A file or pipe has no width; rich's 80-column default would cut method columns short.
    return Console() if sys.stdout.isatty() else Console(width=_PIPE_WIDTH)


def _parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        usage_error(f"--size takes WIDTHxHEIGHT, e.g. 256x256; got {text!r}")
    return int(match.group(2)), int(match.group(1))
