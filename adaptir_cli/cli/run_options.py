"""Options `restore` and `bench` share, and checks run before any work."""

from __future__ import annotations

from pathlib import Path

from adaptir_cli.atomic_files import scratch_file
from adaptir_cli.cli.common import usage_error

MAX_MEGAPIXELS_HELP = (
    "Refuse inputs whose header declares more megapixels than this, before decoding them "
    "(damaged or hostile files declare sizes their data cannot fill); 0: no limit."
)


def size_limit(max_megapixels: float) -> float | None:
    """The value read_image takes: None for no limit (the option's 0)."""
    return max_megapixels or None


def check_output_folder(folder: Path) -> None:
    """Create `folder` and prove it takes a file, before any image is restored into it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with scratch_file(folder / "adaptir-write-check"):
            pass
    except OSError as error:
        usage_error(f"cannot write to the output folder {folder}: {error.strerror or error}", "pick a folder you can write to")
