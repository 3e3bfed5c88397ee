"""Peak resident memory of `adaptir restore` on a large synthetic image (results: docs/performance.md).

    python benchmarks/restore_memory.py --task denoise
    python benchmarks/restore_memory.py --task sr2
    python benchmarks/restore_memory.py --task sr4 --width 4000 --height 3000
    python benchmarks/restore_memory.py --task sr2 --forward 4

Each run restores one PNG (made once, smooth random colours, 4000 x 3000 by default) with the
default tile settings in a fresh process, so that the peak covers reading, tiling and writing and
nothing else; it prints one JSON object. `--forward N` instead measures one forward pass of the
base on N random 512 x 512 tiles, in a fresh process: what a batch of tiles costs.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_png(folder: Path, width: int, height: int) -> Path:
    """A natural-looking (smooth, compressible) test image, written once and reused."""
    path = folder / f"input_{width}x{height}.png"
    if not path.exists():
        coarse = (np.random.default_rng(0).random((max(2, height // 16), max(2, width // 16), 3)) * 255).astype(np.uint8)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(coarse).resize((width, height), Image.BICUBIC).save(path)
    return path


def forward_peak(base: str, task: str, tiles: int) -> None:
    """Run in a child process: peak RSS of one forward on `tiles` 512 px tiles."""
    import torch

    from adaptir_cli.weights.resolve import load_base

    loaded = load_base(base)
    with torch.inference_mode():
        loaded(torch.rand(tiles, 3, 512, 512), task)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="compactir-default")
    parser.add_argument("--task", default="sr2")
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/adaptir-bench"))
    parser.add_argument("--forward", type=int, metavar="N", help="Measure one forward of N 512 px tiles instead.")
    parser.add_argument("restore_args", nargs="*", help="Extra `adaptir restore` options, after `--`.")
    args = parser.parse_args()
    if args.forward:
        here = str(Path(__file__).parent)
        code = f"import sys; sys.path.insert(0, {here!r}); from restore_memory import forward_peak; " \
               f"forward_peak({args.base!r}, {args.task!r}, {args.forward})"
        peak_kib = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
        print(json.dumps({"benchmark": "forward_memory", "base": args.base, "task": args.task,
                          "tiles": f"{args.forward} x 512x512", "peak_rss_mib": round(peak_kib / 1024)}))
        return
    source = synthetic_png(args.workdir, args.width, args.height)
    command = [
        sys.executable, "-m", "adaptir_cli", "restore", str(source), str(args.workdir / "out"), "--task", args.task,
        "--base", args.base, "--overwrite", "--quiet", "--device", args.device, *args.restore_args,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    # ru_maxrss of the children is the largest peak of any one child: here, the restore.
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({
        "benchmark": "restore_memory", "input": f"{args.width}x{args.height}", "base": args.base, "task": args.task,
        "extra": args.restore_args, "seconds": round(seconds, 1), "peak_rss_mib": round(peak_kib / 1024),
        "machine": f"{platform.machine()}, {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    }, indent=2))


if __name__ == "__main__":
    main()
