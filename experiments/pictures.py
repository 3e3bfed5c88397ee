"""The before/after pictures of docs/pictures.md: every task on an image this project drew itself.

The benchmark images are under research terms (never to be published), so the pictures use a
synthetic chart (fine text, thin lines, circles, gradients, a checkerboard, coloured flat areas)
that tests what restorations get wrong: lost detail, ringing, smeared edges, colour shifts. Each
task's degradation is applied with its seed, the image is restored with what `adaptir restore`
uses without --base and --adapter, and `adaptir compare`'s layout shows input | restored |
original with RGB PSNR.

    python experiments/pictures.py [--out docs/pictures] [--size 192]

Run it on your own images instead with `adaptir restore` and `adaptir compare` (docs/pictures.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from adaptir_cli.data.degradations import get_degradation
from adaptir_cli.imaging.compare import Panel, compare, to_uint8
from adaptir_cli.imaging.writing import write_image
from adaptir_cli.imaging.tensors import to_numpy, to_tensor
from adaptir_cli.restorer import Restorer
from adaptir_cli.weights.resolve import base_for, default_adapter, load_base

# task -> the degradation that makes its input (the benchmark's, at a level worth looking at)
TASKS = {"sr4": "sr4", "lr4-noise30": "lr4-noise30", "denoise": "denoise30", "derain": "derain", "lowlight": "lowlight"}


def chart(size: int) -> np.ndarray:
    """A synthetic test chart, float32 (size, size, 3) in [0, 1]."""
    picture = Image.new("RGB", (size, size), (200, 190, 170))
    draw = ImageDraw.Draw(picture)
    third = size // 3
    for x in range(size):  # a colour gradient band
        draw.line([(x, 0), (x, third // 2)], fill=(int(255 * x / size), 90, 255 - int(255 * x / size)))
    for i in range(0, third, 4):  # converging thin lines: aliasing and detail
        draw.line([(0, third // 2 + i), (third, third // 2 + third // 2)], fill=(20, 20, 20), width=1)
    for r in range(4, third // 2, 5):  # concentric circles
        centre = (size - third // 2, third)
        draw.ellipse([centre[0] - r, centre[1] - r, centre[0] + r, centre[1] + r], outline=(30, 60, 140), width=1)
    cell = max(2, size // 48)
    for row in range(6):  # a small checkerboard
        for col in range(6):
            if (row + col) % 2:
                left, top = third + col * cell, third // 2 + row * cell
                draw.rectangle([left, top, left + cell - 1, top + cell - 1], fill=(10, 10, 10))
    top = size // 2
    for text_size in (size // 24, size // 16, size // 11):  # text of growing sizes
        font = ImageFont.load_default(size=text_size)
        draw.text((6, top), "adaptir 0123", fill=(15, 15, 15), font=font)
        top += text_size + size // 32
    draw.rectangle([size - third, size - third, size - 6, size - 6], fill=(190, 40, 40))  # flat colour
    draw.ellipse([size - third + 8, size - third + 8, size - 14, size - 14], fill=(250, 230, 60))
    return np.asarray(picture, dtype=np.float32) / 255.0


def restore_for(task: str, image: np.ndarray) -> np.ndarray:
    """What `adaptir restore --task TASK` does with no --base and no --adapter (whole image, CPU)."""
    restorer = Restorer(load_base(base_for(task)), device="cpu")
    restorer.use(task, default_adapter(restorer.base, task))
    output, _ = restorer.restore(to_tensor(image))
    return to_numpy(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/pictures"))
    parser.add_argument("--size", type=int, default=256, help="side of the chart in output pixels (a multiple of 4)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    clean = chart(args.size)
    for task, degradation in TASKS.items():
        degraded = get_degradation(degradation)(clean, np.random.default_rng(0))
        restored = restore_for(task, degraded)
        panels = [Panel("input", to_uint8(degraded)), Panel(f"adaptir {task}", to_uint8(restored))]
        result = compare(panels, Panel("original", to_uint8(clean)), zoom=2)
        write_image(args.out / f"{task}.png", result.picture.astype(np.float32) / 255.0)
        scores = ", ".join(f"{label} {value:.2f} dB" for label, value in result.psnr.items())
        print(f"{task}: {scores}", flush=True)


if __name__ == "__main__":
    main()
