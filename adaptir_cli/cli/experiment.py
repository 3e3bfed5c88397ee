"""`adaptir experiment run|report`: PETL comparisons as data (the work is in adaptir_cli.experiments)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from adaptir_cli.cli import training_options as opt
from adaptir_cli.cli.common import EXIT_USAGE, fail, split_hint, stderr
from adaptir_cli.cli.help_format import Typer
from adaptir_cli.experiments.config import ExperimentError, load_experiment
from adaptir_cli.experiments.plot import plot_svg
from adaptir_cli.experiments.report import merge_report, report_markdown
from adaptir_cli.experiments.results import ResultsError, experiment_results
from adaptir_cli.atomic_files import atomic_write_text
from adaptir_cli.training.loop import TrainingInterrupted

FORMAT = """
An experiment is a folder (\\[data] and \\[train] take the names of `adaptir finetune`'s options):

  experiment.toml:
    name = "emt-x4-lr4-noise30"
    base = "${ADAPTIR_SHARED}/weights/EMT_LSR_x4.pth"   # or a name: emt-x4
    task = "lr4-noise30"
    \\[data]   gt = "${ADAPTIR_SHARED}/data/train/BSD400"
    \\[train]  steps = 2000, batch = 16, patch = 48, lr = 1e-4, seed = 0
    \\[bench]  datasets = \\["Set5", "B100"], data = "${ADAPTIR_SHARED}/data/test"

  runs/00-none.toml:     label = "No tuning", method = "none"
  runs/10-adaptir.toml:  label = "AdaptIR", method = "adaptir", \\[config] hidden = 8
  runs/90-full.toml:     label = "Full fine-tuning", method = "full", \\[train] lr = 1e-5

Relative paths are relative to the folder; ${ADAPTIR_SHARED} is --shared or the environment's.
"""

EXAMPLES = """
Examples:

  adaptir experiment run experiments/petl/emt-x4-lr4-noise30 --shared ../shared

  adaptir experiment run experiments/petl/emt-x4-lr4-noise30 --only 60-adaptir --force --device cuda

  adaptir experiment report experiments/petl/* --out docs/results.md --plot docs/results.svg
"""

app = Typer(
    help="Compare PETL methods: train, benchmark and record every run of an experiment folder.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.command("run", epilog=FORMAT + EXAMPLES)
def run(
    folder: Path = typer.Argument(..., help="The experiment folder (experiment.toml and runs/*.toml).", metavar="DIR"),
    only: list[str] = typer.Option(
        [], "--only", help="Run only this run (label or file stem); repeatable.", metavar="RUN",
    ),
    force: bool = typer.Option(False, "--force", help="Retrain runs whose output already exists."),
    device: str = opt.DEVICE,
    shared: Optional[Path] = typer.Option(
        None, "--shared",
        help="The folder ${ADAPTIR_SHARED} stands for in the experiment's paths (default: $ADAPTIR_SHARED).",
        metavar="DIR",
    ),
    quiet: bool = opt.QUIET,
) -> None:
    """Train each run (reusing finished ones), benchmark them all in one pass, write results/RUN.json."""
    from adaptir_cli.experiments.runner import run_experiment  # torch and the models: only when running

    try:
        experiment = load_experiment(folder, shared)
        experiment.select(only)
    except ExperimentError as error:
        fail(*split_hint(error), code=EXIT_USAGE)
    with opt.reported_training_errors():
        try:
            written = run_experiment(experiment, only=only, force=force, device=device, console=stderr,
                                     show_progress=not quiet)
        except TrainingInterrupted as interrupted:  # here, not in the generic handler, whose hint is --resume
            stderr.print(
                f"[yellow]Interrupted after step {interrupted.step}.[/] Run the same command again to continue "
                "(the checkpoint is resumed; finished runs are kept).", highlight=False, soft_wrap=True,
            )
            raise typer.Exit(opt.EXIT_INTERRUPTED) from None
    if not quiet:
        for path in written:
            stderr.print(f"Wrote {escape(str(path))}", highlight=False, soft_wrap=True)
        stderr.print(f"Next: adaptir experiment report {escape(str(folder))}", highlight=False, soft_wrap=True)


@app.command("report", epilog=EXAMPLES)
def report(
    folders: list[Path] = typer.Argument(
        ..., help="Experiment folders; their results/*.json are read.", metavar="DIR...",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Markdown file to write (default: stdout).", metavar="FILE",
    ),
    plot: Optional[Path] = typer.Option(
        None, "--plot", help="Also write an SVG plot of PSNR on the first set against trainable parameters.",
        metavar="FILE",
    ),
) -> None:
    """Markdown tables (and an SVG plot) from the results files only; never from anything typed by hand.

    With --out, an existing file keeps everything outside its generated part.
    """
    if plot is not None and plot.suffix.lower() != ".svg":
        fail(escape(f"--plot writes SVG; give a file ending in .svg, not {plot.name}"), code=EXIT_USAGE)
    try:
        experiments = [experiment_results(folder) for folder in folders]
    except ResultsError as error:
        fail(*split_hint(error))
    link = None
    if plot is not None:
        svg = plot_svg(experiments)
        atomic_write_text(plot, svg)
        # The markdown shows the plot by a path relative to where the markdown lives.
        where = out.parent if out is not None else Path.cwd()
        link = Path(os.path.relpath(plot.resolve(), where.resolve())).as_posix()
    markdown = report_markdown(experiments, plot=link)
    if out is None:
        typer.echo(markdown, nl=False)
    else:
        # Only the generated part of an existing file is replaced: the analysis around it stays.
        existing = out.read_text(encoding="utf-8") if out.is_file() else None
        merged = merge_report(existing, markdown)
        atomic_write_text(out, merged)
        stderr.print(escape(f"Wrote {out}" + (f" and {plot}" if plot is not None else "")), highlight=False, soft_wrap=True)
