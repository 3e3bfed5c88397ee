"""`adaptir compare`: a labelled side-by-side picture of an input, its restorations and a reference."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from adaptir_cli.cli.common import fail, print_json, stderr, usage_error
from adaptir_cli.imaging.compare import CompareError, Panel, compare as compose, to_uint8
from adaptir_cli.imaging.formats import ImageReadError, ImageWriteError
from adaptir_cli.imaging.reading import read_image
from adaptir_cli.imaging.writing import write_image

EXAMPLES = """
Examples:

  adaptir compare rainy.png derained/rainy.png --out side_by_side.png

  adaptir compare lr.png out/lr.png out-fast/lr.png --label input --label EMT --label LMLT-tiny --reference hr.png -o cmp.png

  adaptir compare noisy.png out/noisy.png --reference clean.png --crop 100,80,128,96 --zoom 3 -o detail.png --json
"""


def compare(
    images: list[Path] = typer.Argument(
        ..., metavar="INPUT OUTPUT...", help="The input, then one or more restorations of it.", show_default=False
    ),
    out: Path = typer.Option(..., "--out", "-o", metavar="FILE", help="The picture to write (.png, .jpg, .webp)."),
    reference: Optional[Path] = typer.Option(
        None, "--reference", "-r", metavar="FILE", help="The clean image: shown last, and each panel's RGB PSNR against it."
    ),
    label: list[str] = typer.Option(
        [], "--label", "-l", metavar="TEXT", help="Panel captions in order (default: input, then the file names)."
    ),
    crop: Optional[str] = typer.Option(
        None, metavar="L,T,W,H", help="Show only this detail (left, top, width, height in output pixels)."
    ),
    zoom: int = typer.Option(1, min=1, max=16, metavar="N", help="Enlarge the shown pixels N times (nearest)."),
    json_out: bool = typer.Option(False, "--json", help="Print the PSNR values as JSON on stdout."),
) -> None:
    """Write INPUT | OUTPUT... | REFERENCE side by side, labelled, with PSNR when a reference is given."""
    if len(images) < 2:
        usage_error("give the input and at least one restored image", "adaptir compare INPUT OUTPUT... --out FILE")
    if label and len(label) != len(images):
        usage_error(f"give one --label per image ({len(images)}), or none; got {len(label)}")
    captions = label or ["input"] + [_name(path, images[1:]) for path in images[1:]]
    box = _parse_crop(crop) if crop else None
    try:
        panels = [Panel(caption, to_uint8(read_image(path).rgb)) for caption, path in zip(captions, images)]
        truth = Panel("reference", to_uint8(read_image(reference).rgb)) if reference is not None else None
        result = compose(panels, truth, crop=box, zoom=zoom)
        write_image(out, result.picture.astype("float32") / 255.0)
    except (ImageReadError, ImageWriteError, CompareError) as error:
        fail(str(error))
    for caption, score in result.psnr.items():
        stderr.print(f"{caption}: {score:.2f} dB RGB PSNR against {reference}", highlight=False, soft_wrap=True)
    stderr.print(f"Wrote {out}", highlight=False, soft_wrap=True)
    if json_out:
        print_json({"out": str(out), "reference": str(reference) if reference else None, "psnr_rgb": result.psnr})


def _name(path: Path, outputs: list[Path]) -> str:
    """A restoration's caption: its folder when every output has the same file name (out/a.png, fast/a.png)."""
    same = len({p.name for p in outputs}) < len(outputs)
    return path.parent.name if same and path.parent.name else path.stem


def _parse_crop(text: str) -> tuple[int, int, int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*", text)
    if not match:
        usage_error(f"--crop takes LEFT,TOP,WIDTH,HEIGHT in pixels, e.g. 100,80,128,96; got {text!r}")
    left, top, width, height = (int(value) for value in match.groups())
    return left, top, width, height
