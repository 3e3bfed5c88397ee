"""How much tiling changes a restore: tiled against whole-image runs on real images (docs/performance.md).

    python benchmarks/tiling_quality.py --base ../shared/weights/EMT_LSR_x4.pth --task sr4 \\
        --images ../shared/data/test/Set14/ppt3.png ../shared/data/test/B100/108005.png
    python benchmarks/tiling_quality.py --base compactir-default --task denoise --sigma 30 --images ...

For each image the input is made as `adaptir bench` makes it (x4: MATLAB bicubic down-scaling of
the mod-cropped image; denoise: seeded Gaussian noise), restored whole and at each `--tiles` size
with the base's default overlap (or `--overlap`), through the same Restorer `adaptir restore`
uses. `--direct` also feeds the clean image itself as the input, a larger one with no ground
truth, where only the difference between tiled and whole outputs is measured. One JSON object out.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from adaptir_cli.bench.protocol import make_protocol
from adaptir_cli.imaging.reading import read_image
from adaptir_cli.imaging.resize import modcrop
from adaptir_cli.imaging.tensors import to_numpy, to_tensor
from adaptir_cli.metrics import psnr, to_uint8
from adaptir_cli.restorer import Restorer, TileSettings
from adaptir_cli.weights.resolve import load_base


def restore(restorer: Restorer, image: np.ndarray, tile: int, overlap: int | None) -> tuple[np.ndarray, dict]:
    settings = TileSettings(tile=tile, overlap=overlap, batch=1)
    used_tile, used_overlap = restorer.tile_settings(settings)
    output, stats = restorer.restore(to_tensor(image), settings)
    return to_uint8(to_numpy(output)), {"tile": used_tile, "overlap": used_overlap, "tiles": stats.tiles}


def compare(restorer: Restorer, image: np.ndarray, gt: np.ndarray | None, args: argparse.Namespace, crop: int,
            y_channel: bool) -> list[dict]:
    whole, _ = restore(restorer, image, 0, None)
    rows = [{"tile": 0, "tiles": 1, **({"psnr": round(psnr(whole, gt, crop, y_channel), 4)} if gt is not None else {})}]
    for tile in args.tiles:
        tiled, used = restore(restorer, image, tile, args.overlap)
        difference = np.abs(tiled.astype(np.int16) - whole)
        margin = args.border * restorer.scale
        row = {
            "asked_tile": tile, **used,
            # Tiled against whole outputs: inf when tiling changes no 8-bit value.
            "vs_whole_db": round(psnr(tiled, whole), 2),
            "max_levels": int(difference.max()),
            # Away from the image border, where whole-image runs of EMT see the opposite border
            # through their circular shifts and no tile can.
            "max_levels_interior": int(difference[margin:-margin, margin:-margin].max(initial=0)),
        }
        if gt is not None:
            row["psnr"] = round(psnr(tiled, gt, crop, y_channel), 4)
            row["delta_db"] = round(row["psnr"] - rows[0]["psnr"], 4)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True)
    parser.add_argument("--task", default="sr4")
    parser.add_argument("--sigma", type=float)
    parser.add_argument("--images", type=Path, nargs="+", required=True)
    parser.add_argument("--tiles", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--overlap", type=int)
    parser.add_argument("--direct", action="store_true", help="Also restore the clean image itself (no ground truth).")
    parser.add_argument("--border", type=int, default=32, help="Input px left out of max_levels_interior.")
    args = parser.parse_args()
    restorer = Restorer(load_base(args.base), device="cpu")
    restorer.use(args.task)
    protocol, degradation = make_protocol(args.task, args.sigma)
    results = []
    for index, path in enumerate(args.images):
        clean = read_image(path).rgb
        gt = to_uint8(modcrop(clean, protocol.scale))
        lq = np.ascontiguousarray(degradation(clean, np.random.default_rng(protocol.seed + index)), dtype=np.float32)
        y_channel = protocol.channel == "y"
        entry = {"image": path.name, "input": f"{lq.shape[1]}x{lq.shape[0]}",
                 "rows": compare(restorer, lq, gt, args, protocol.crop, y_channel)}
        if args.direct:
            entry["direct"] = {"input": f"{clean.shape[1]}x{clean.shape[0]}",
                               "rows": compare(restorer, clean, None, args, protocol.crop, y_channel)}
        results.append(entry)
        print(json.dumps(entry), flush=True)
    print(json.dumps({
        "benchmark": "tiling_quality", "base": args.base, "task": args.task,
        "overlap": args.overlap if args.overlap is not None else "base default",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
                   f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    }))


if __name__ == "__main__":
    main()
