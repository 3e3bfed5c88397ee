"""Checks of the options `restore` and `bench` share, run before any image is read or any weights
are loaded: a typo must not cost the compute of a whole batch (usage errors, exit 2)."""

from __future__ import annotations

from pathlib import Path

import typer

from adaptir_cli.atomic_files import scratch_file
from adaptir_cli.bases.loading import WeightsError
from adaptir_cli.cli import completion as complete
from adaptir_cli.cli.common import fail, split_hint, usage_error
from adaptir_cli.imaging.formats import DEFAULT_MAX_MEGAPIXELS
from adaptir_cli.restorer import DEFAULT_TILE, Restorer, RestoreError, TileSettings
from adaptir_cli.runtime import RuntimeChoiceError, check_precision, resolve_device
from adaptir_cli.weights.resolve import adapter_file

# The defaults Restorer.tile_settings applies when --tile/--overlap are not given.
TILE_HELP = (
    f"Tile size in input pixels (0: whole image). Default: {DEFAULT_TILE} (the base's; fixed-size bases use "
    "their patch)."
)
OVERLAP_HELP = (
    "Overlap between tiles in input pixels. Default: the base's own (EMT 32, LMLT-tiny 64, CompactIR 32, IPT 8; "
    "`adaptir models info NAME` shows it as tile_overlap)."
)
MAX_MEGAPIXELS_HELP = (
    "Refuse inputs whose header declares more megapixels than this, before decoding them "
    "(damaged or hostile files declare sizes their data cannot fill); 0: no limit."
)


# The options restore and bench share, declared once.
OVERLAP = typer.Option(None, help=OVERLAP_HELP, metavar="N")
BATCH = typer.Option(
    None, min=1, metavar="N",
    help="Tiles run together on the device. Default: 1 on a CPU; on CUDA as many as fit in half the free memory (at most 64).",
)
FORCE = typer.Option(False, help="Load adapters trained on another base, or for another task, anyway.")
DEVICE = typer.Option("auto", help="auto, cpu, cuda or cuda:N.", metavar="DEVICE", autocompletion=complete.devices)
PRECISION = typer.Option(
    "auto", help="auto (bf16 on CUDA where the base allows it), fp32 or bf16.", metavar="PRECISION",
    autocompletion=complete.precisions,
)
MAX_MEGAPIXELS = typer.Option(DEFAULT_MAX_MEGAPIXELS, help=MAX_MEGAPIXELS_HELP, metavar="MP")


def check_run_options(
    *, tile: int | None, overlap: int | None, device: str, precision: str, max_megapixels: float
) -> None:
    """Tile, overlap, device, precision and size limit, each refused with the option's name."""
    if tile is not None and tile < 0:
        usage_error(f"--tile must be 0 (whole images) or a size in pixels, not {tile}")
    if overlap is not None and overlap < 0:
        usage_error(f"--overlap must be 0 or more pixels, not {overlap}")
    if tile and overlap is not None and overlap >= tile:
        usage_error(f"--overlap ({overlap}) must be smaller than --tile ({tile})")
    if max_megapixels < 0:
        usage_error(f"--max-megapixels must be 0 (no limit) or more, not {max_megapixels:g}")
    for option, check, value in (("--device", resolve_device, device), ("--precision", check_precision, precision)):
        try:
            check(value)
        except RuntimeChoiceError as error:
            usage_error(f"{option}: {error}")


def check_quality(quality: int) -> None:
    if not 1 <= quality <= 100:
        usage_error(f"--quality must be between 1 and 100, not {quality}")


def check_tiles(restorer: Restorer, settings: TileSettings) -> None:
    """--tile/--overlap against the loaded base's sizes, before the first image."""
    try:
        restorer.tile_settings(settings)
    except RestoreError as error:
        usage_error(str(error))


def size_limit(max_megapixels: float) -> float | None:
    """The value read_image takes: None for no limit (the option's 0)."""
    return max_megapixels or None


def resolve_adapters(adapters: list[str]) -> list[Path | None]:
    """Each --adapter as a file: a name `adaptir models list` shows, or a path ('' for none).

    A missing file is a usage error; a shipped adapter missing from a broken install ends the command.
    """
    resolved: list[Path | None] = []
    for adapter in adapters:
        try:
            path = adapter_file(adapter) if adapter else None
        except WeightsError as error:
            fail(*split_hint(error))
        if path is not None and not path.is_file():
            usage_error(f"--adapter file not found: {adapter}", "pass a file, or a name from `adaptir models list`")
        resolved.append(path)
    return resolved


def check_output_folder(folder: Path) -> None:
    """Create `folder` and prove it takes a file, before any image is restored into it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with scratch_file(folder / "adaptir-write-check"):
            pass
    except OSError as error:
        usage_error(f"cannot write to the output folder {folder}: {error.strerror or error}", "pick a folder you can write to")
