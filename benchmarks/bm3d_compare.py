"""The x1 default base against BM3D, the classical denoiser a user would otherwise run, on the same
noisy images: `adaptir bench`'s inputs (Gaussian noise seeded by image index, clipped, not
quantised; gray images get gray noise) and its PSNR / SSIM.

    pip install bm3d   # this benchmark only; adaptir does not depend on it
    python benchmarks/bm3d_compare.py [--data ../shared/data/test] [--limit 15] [--base NAME] [--out bm3d.json]

Colour sets run CBM3D (`bm3d.bm3d_rgb`, opponent colour space), gray ones BM3D on the single
channel, both told the true sigma; adaptir runs blind, as `adaptir restore --task denoise` does
(whole images, the default base unless --base). Seconds are wall time per image on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from adaptir_cli import api, markdown
from adaptir_cli.bench.protocol import make_protocol
from adaptir_cli.bench.runner import make_pair, score_image
from adaptir_cli.data.datasets import find_dataset
from adaptir_cli.metrics import to_uint8

# (test set, sigma): the levels of issue 12's targets; Set12 is the gray set.
RUNS = (("CBSD68", 15), ("CBSD68", 30), ("CBSD68", 50), ("Set12", 25))


def _bm3d(sigma: float) -> Callable[[np.ndarray, bool], np.ndarray]:
    try:
        import bm3d
    except ImportError:
        sys.exit("this benchmark compares with BM3D: pip install bm3d (4.0.3 was measured)")

    def denoise(noisy: np.ndarray, gray: bool) -> np.ndarray:
        if gray:  # the three channels are equal: BM3D on one, replicated
            return np.repeat(bm3d.bm3d(noisy[..., 0], sigma / 255.0)[..., None], 3, axis=2)
        return bm3d.bm3d_rgb(noisy, sigma / 255.0)

    return denoise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/test"), help="the folder of the test sets")
    parser.add_argument("--limit", type=int, help="only the first N images of each set (sorted by name)")
    parser.add_argument("--base", help="the adaptir base (a name or a file); the denoise default unless given")
    parser.add_argument("--runs", nargs="+", help="SET:SIGMA pairs instead of the default four, e.g. Set12:25")
    parser.add_argument("--methods", nargs="+", choices=("bm3d", "adaptir"), default=["bm3d", "adaptir"],
                        help="run only these beside the input (BM3D's numbers do not depend on the base)")
    parser.add_argument("--out", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args()
    runs = [(name, float(sigma)) for name, sigma in (r.split(":") for r in args.runs)] if args.runs else RUNS
    restorers = api.Restorers(args.base, device="cpu")
    rows = []
    for set_name, sigma in runs:
        protocol, degradation = make_protocol("denoise", sigma)
        images = find_dataset(set_name, args.data).images[: args.limit]
        methods: dict[str, Callable[[np.ndarray, bool], np.ndarray]] = {"input": lambda lq, gray: lq}
        if "bm3d" in args.methods:
            methods["BM3D"] = _bm3d(sigma)  # CBM3D on colour images
        if "adaptir" in args.methods:
            methods["adaptir"] = lambda lq, gray: api.restore_array(lq, "denoise", tile=0, restorers=restorers)
        scores: dict[str, list] = {label: [] for label in methods}
        for index, image in enumerate(images):
            gt, lq = make_pair(image, index, protocol, degradation)
            gray = bool(np.array_equal(lq[..., 0], lq[..., 1]) and np.array_equal(lq[..., 0], lq[..., 2]))
            for label, method in methods.items():
                start = time.perf_counter()
                output = to_uint8(np.clip(method(lq, gray), 0.0, 1.0))
                scores[label].append(score_image(image.name, output, gt, protocol.crop, time.perf_counter() - start))
        for label, per_image in scores.items():
            row = {"set": set_name, "sigma": sigma, "images": len(per_image), "method": label,
                   "psnr": round(statistics.fmean(s.psnr["rgb"] for s in per_image), 2),
                   "ssim": round(statistics.fmean(s.ssim["rgb"] for s in per_image), 4),
                   "seconds": round(statistics.median(s.seconds for s in per_image), 2)}
            rows.append(row)
            print(f"{set_name:8} sigma {sigma:4g} {label:14} {row['psnr']:6.2f} dB {row['ssim']:.4f} "
                  f"{row['seconds']:6.2f} s/image", flush=True)
    base = restorers.base_name("denoise")
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, cpu, fp32"
    table = [[r["set"], f"{r['sigma']:g}", r["images"], base if r["method"] == "adaptir" else r["method"],
              f"{r['psnr']:.2f} / {r['ssim']:.4f}", "-" if r["method"] == "input" else f"{r['seconds']:.2f}"]
             for r in rows]
    print("\n" + "\n".join(markdown.table(["set", "sigma", "images", "method", "RGB PSNR / SSIM", "s / image"],
                                            table, "lrrlrr")))
    print(f"\n{machine}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({"machine": machine, "base": base, "limit": args.limit, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
