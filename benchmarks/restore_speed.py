"""Speed and memory of `adaptir restore` (the issue's goals; results go to docs/performance.md).

    python benchmarks/restore_speed.py tiling  --base ../shared/weights/EMT_LSR_x4.pth
    python benchmarks/restore_speed.py swap    --base ../shared/weights/EMT_LSR_x4.pth
    python benchmarks/restore_speed.py patches

Each prints one JSON object. Timings are medians over repeats after a warm-up. Peak memory has
its own script, benchmarks/restore_memory.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from adaptir_cli.adapters import AdaptIRConfig, apply_adapter, inject, read_adapter, remove_adapters, save_adapter
from adaptir_cli.bases import load_base_file
from adaptir_cli.imaging.tiling import plan_tiles
from adaptir_cli.restorer import Restorer, TileSettings


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _smooth_image(height: int, width: int) -> torch.Tensor:
    """Natural-image-like input: EMT is chaotic on uniform noise (EMT.md 9.12)."""
    coarse = torch.rand(1, 3, max(2, height // 16), max(2, width // 16))
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic").clamp(0, 1)


def tiling(args: argparse.Namespace) -> dict:
    restorer = Restorer(load_base_file(args.base), device=args.device)
    restorer.use(args.task)
    image = _smooth_image(args.size, args.size)
    results = {}
    for label, settings in {
        "whole image (--tile 0)": TileSettings(tile=0),
        "default (--tile 512, the base's overlap)": TileSettings(),
        "--tile 128 --overlap 16": TileSettings(tile=128, overlap=16),
        "--tile 192 --overlap 16": TileSettings(tile=192, overlap=16),
    }.items():
        seconds = _median_seconds(lambda: restorer.restore(image, settings), args.repeats)
        results[label] = {"seconds": round(seconds, 3), "tiles": restorer.restore(image, settings)[1].tiles}
    whole = results["whole image (--tile 0)"]["seconds"]
    for entry in results.values():
        entry["overhead_percent"] = round(100 * (entry["seconds"] / whole - 1), 1)
    return {"input": f"{args.size}x{args.size}", "results": results}


def swap(args: argparse.Namespace) -> dict:
    load_seconds = _median_seconds(lambda: load_base_file(args.base), args.repeats)
    base = load_base_file(args.base)
    folder = Path(args.workdir)
    files = []
    for index, config in enumerate((AdaptIRConfig(), AdaptIRConfig(), AdaptIRConfig(hidden=16))):
        inject(base.module, base.descriptor, "adaptir", config)
        files.append(read_adapter(save_adapter(folder / f"a{index}.safetensors", base.module, method="adaptir",
                                               config=config, base=base, task=args.task)))
        remove_adapters(base.module)
    apply_adapter(base, files[0])
    same = _median_seconds(lambda: (apply_adapter(base, files[1]), apply_adapter(base, files[0])), args.repeats) / 2
    other = _median_seconds(lambda: (apply_adapter(base, files[2]), apply_adapter(base, files[0])), args.repeats) / 2
    read = _median_seconds(lambda: read_adapter(files[0].path), args.repeats)
    return {"base_load_seconds": round(load_seconds, 4), "adapter_read_seconds": round(read, 4),
            "swap_same_config_seconds": round(same, 5), "swap_other_config_seconds": round(other, 4)}


def patches(args: argparse.Namespace) -> dict:
    """IPT 48 px patch forwards per image: our grid vs non-overlapping tiles."""
    out = {}
    for height, width in ((321, 481), (256, 256)):
        ours = len(plan_tiles(height, width, 48, args.overlap))
        disjoint = len(plan_tiles(height, width, 48, 0))
        out[f"{width}x{height}"] = {"ours": ours, "non_overlapping": disjoint, "stride": 48 - args.overlap}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("tiling", "swap", "patches"))
    parser.add_argument("--base", type=Path)
    parser.add_argument("--task", default="sr4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", default="/tmp/adaptir-bench")
    args = parser.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    result = {"benchmark": args.what, **globals()[args.what](args)}
    result["machine"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
