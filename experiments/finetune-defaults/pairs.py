"""The issue-14 case as files: a user's own pairs of colour photos, Gaussian blur then JPEG.

    python experiments/finetune-defaults/pairs.py ../shared/data/test/McMaster WORK/blur-jpeg

writes WORK/blur-jpeg/{train,val}/{gt,lq}/NAME.png: the first 8 images (sorted by name) are the
training pairs, the rest the held-out ones. Each input is the ground truth blurred with a Gaussian
of sigma 1.6 (OpenCV, kernel size from sigma, reflected borders) and then JPEG-compressed at
quality 60. The pairs are made from research images (../shared/data/README.md): they stay in the
work folder and are never committed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from adaptir_cli.data.degradations import jpeg
from adaptir_cli.imaging.formats import is_image_file
from adaptir_cli.imaging.reading import read_image
from adaptir_cli.imaging.writing import write_image

BLUR_SIGMA = 1.6
JPEG_QUALITY = 60
TRAIN_PAIRS = 8


def blur_jpeg(rgb: np.ndarray, sigma: float = BLUR_SIGMA, quality: int = JPEG_QUALITY) -> np.ndarray:
    """The degraded input of one float RGB image in [0, 1]."""
    blurred = cv2.GaussianBlur(rgb, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    return jpeg(np.clip(blurred, 0.0, 1.0), quality)


def write_pairs(source: Path, work: Path, train_pairs: int = TRAIN_PAIRS) -> dict[str, int]:
    """Write the training and held-out pairs of every image in `source`; returns the counts."""
    names = sorted(path for path in source.iterdir() if is_image_file(path))
    if len(names) <= train_pairs:
        raise SystemExit(f"{source} has {len(names)} images; {train_pairs} train and at least one is held out")
    counts = {"train": 0, "val": 0}
    for index, path in enumerate(names):
        split = "train" if index < train_pairs else "val"
        # 8-bit ground truths, as a user's photos are: the input is made from what is written.
        clean = read_image(path).rgb
        clean = np.round(clean * 255.0).astype(np.float32) / 255.0
        for kind, pixels in (("gt", clean), ("lq", blur_jpeg(clean))):
            folder = work / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            write_image(folder / f"{path.stem}.png", pixels)
        counts[split] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="folder of colour photos (McMaster, Kodak24, CBSD68)")
    parser.add_argument("work", type=Path, help="folder to write train/ and val/ into")
    args = parser.parse_args()
    print(write_pairs(args.source, args.work))


if __name__ == "__main__":
    main()
