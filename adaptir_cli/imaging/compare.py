"""Side-by-side pictures: input | output(s) | reference, labelled, with PSNR against the reference.

Users of restoration tools judge with their eyes first; a picture that also prints the number
keeps the eye honest. Panels are shown at the output's size: a smaller input (super-resolution)
is enlarged with nearest-neighbour, so it shows the pixels the model saw, not a smoothed guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from adaptir_cli.metrics import psnr

_GAP = 8  # px of background between panels
_BACKGROUND = (24, 24, 24)
_TEXT = (240, 240, 240)


class CompareError(ValueError):
    """The images cannot be shown side by side (sizes that do not correspond)."""


@dataclass(frozen=True)
class Panel:
    label: str
    pixels: np.ndarray  # uint8 (H, W, 3)


@dataclass(frozen=True)
class Comparison:
    picture: np.ndarray  # uint8 (H, W, 3)
    psnr: dict[str, float]  # RGB PSNR of every panel against the reference (empty without one)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float [0, 1] samples -> uint8, rounded as the benchmarks quantise."""
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def enlarge(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour enlargement by the integer factor that makes `pixels` `size` (height, width)."""
    height, width = pixels.shape[:2]
    if (height, width) == size:
        return pixels
    factor = size[0] // height
    if factor < 1 or (height * factor, width * factor) != size:
        raise CompareError(
            f"a {width}x{height} image cannot be shown beside a {size[1]}x{size[0]} one: sizes must be equal "
            "or differ by an integer scale"
        )
    return pixels.repeat(factor, axis=0).repeat(factor, axis=1)


def compare(
    panels: list[Panel], reference: Panel | None = None, *, crop: tuple[int, int, int, int] | None = None, zoom: int = 1
) -> Comparison:
    """One picture of the panels (and the reference last), all at the size of the largest panel.

    `crop` = (left, top, width, height) in that size's pixels shows a detail; `zoom` enlarges the
    shown pixels further (nearest-neighbour). PSNR is measured on the whole images, before the crop.
    """
    shown = panels + ([reference] if reference is not None else [])
    if not shown:
        raise CompareError("nothing to compare")
    size = max((panel.pixels.shape[:2] for panel in shown), key=lambda hw: hw[0] * hw[1])
    full = [Panel(panel.label, enlarge(panel.pixels, size)) for panel in shown]
    scores = {}
    if reference is not None:
        truth = full[-1].pixels
        scores = {panel.label: psnr(panel.pixels, truth) for panel in full[:-1]}
    if crop is not None:
        left, top, width, height = crop
        if width < 1 or height < 1 or left < 0 or top < 0 or left + width > size[1] or top + height > size[0]:
            raise CompareError(f"--crop {left},{top},{width},{height} is not inside the {size[1]}x{size[0]} images")
        full = [Panel(p.label, p.pixels[top : top + height, left : left + width]) for p in full]
    if zoom > 1:
        full = [Panel(p.label, p.pixels.repeat(zoom, axis=0).repeat(zoom, axis=1)) for p in full]
    labels = [_caption(panel.label, scores.get(panel.label)) for panel in full]
    return Comparison(_layout([panel.pixels for panel in full], labels), scores)


def _caption(label: str, score: float | None) -> str:
    if score is None:
        return label
    return f"{label}  {'inf' if np.isinf(score) else f'{score:.2f}'} dB"


def _layout(images: list[np.ndarray], labels: list[str]) -> np.ndarray:
    font = ImageFont.load_default(size=max(12, min(28, images[0].shape[1] // 16)))
    strip = int(font.size * 1.6)
    height, width = images[0].shape[:2]
    canvas = Image.new("RGB", (len(images) * width + (len(images) - 1) * _GAP, height + strip), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for index, (pixels, label) in enumerate(zip(images, labels)):
        left = index * (width + _GAP)
        canvas.paste(Image.fromarray(pixels), (left, strip))
        draw.text((left + 4, strip // 2), label, fill=_TEXT, font=font, anchor="lm")
    return np.asarray(canvas)
