"""How Rain100L's rain differs from a synthetic rain preset (issue 12: the derain head's drift).

    python experiments/default/rain_shape.py [PRESET...]     (ADAPTIR_SHARED: the shared data folder)

For Rain100L's 100 pairs, and for each preset's rain (RAIN_PRESETS, through the `derain` /
`derain-heavy` degradations) laid on the same clean targets, it measures the rain residual
(rainy minus clean, Y, clipped at 0): the share of pixels more than 10 levels brighter and their
mean excess (the amount), the input's Y PSNR, the dominant streak angle of each image (structure
tensor of the residual; 0 is vertical; 5th / 50th / 95th percentile over images) and the streak
width (mean horizontal run of the bright pixels, every 4th row). Numbers only; nothing is written.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np

from adaptir_cli.data.degradations import DEGRADATIONS
from adaptir_cli.imaging.reading import read_image

ROOT = Path(__file__).resolve().parents[2]
Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0  # BT.601 luma of [0, 1] RGB, in [0, 1]
STREAK_LEVEL = 10 / 255


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ Y_WEIGHTS


def streak_angle(residual: np.ndarray) -> float:
    """Degrees from vertical of the residual's dominant orientation (its gradients' normal)."""
    gx, gy = cv2.Sobel(residual, cv2.CV_64F, 1, 0), cv2.Sobel(residual, cv2.CV_64F, 0, 1)
    jxx, jyy, jxy = (gx * gx).sum(), (gy * gy).sum(), (gx * gy).sum()
    return float(0.5 * np.degrees(np.arctan2(2 * jxy, jxx - jyy)))


def streak_width(bright: np.ndarray) -> float:
    runs: list[int] = []
    for row in bright[::4]:
        edges = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
        runs.extend(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))
    return float(np.mean(runs)) if runs else 0.0


def describe(pairs: list[tuple[np.ndarray, np.ndarray]]) -> str:
    shares, excess, psnrs, angles, widths = [], [], [], [], []
    for rainy, clean in pairs:
        difference = luma(rainy) - luma(clean)
        residual = np.clip(difference, 0, None)
        bright = residual > STREAK_LEVEL
        shares.append(bright.mean())
        excess.append(residual[bright].mean() * 255 if bright.any() else 0.0)
        psnrs.append(10 * np.log10(1 / max((difference**2).mean(), 1e-12)))
        angles.append(streak_angle(residual))
        widths.append(streak_width(bright))
    low, mid, high = np.percentile(angles, [5, 50, 95])
    return (f"{100 * np.mean(shares):5.1f} % streak pixels, +{np.mean(excess):4.1f} levels, input {np.mean(psnrs):5.2f} dB, "
            f"angle {low:+5.1f} / {mid:+5.1f} / {high:+5.1f} deg, width {np.mean(widths):4.2f} px")


def main(presets: list[str]) -> None:
    folder = Path(os.environ.get("ADAPTIR_SHARED", ROOT.parent / "shared")) / "data" / "test" / "Rain100L"
    rainy = sorted((folder / "input").iterdir())
    clean = sorted((folder / "target").iterdir())
    real = [(read_image(r).rgb, read_image(c).rgb) for r, c in zip(rainy, clean)]
    print(f"{'Rain100L':14s} {describe(real)}")
    rng = np.random.default_rng(0)
    for name in presets:
        synthetic = [(DEGRADATIONS[name].apply(target, rng), target) for _, target in real]
        print(f"{name:14s} {describe(synthetic)}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["derain", "derain-heavy"])
