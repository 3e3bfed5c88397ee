"""Speed and memory of `adaptir restore` (the issue's goals; results go to docs/performance.md).

    python benchmarks/restore_speed.py tiling  --base ../shared/weights/EMT_LSR_x4.pth
    python benchmarks/restore_speed.py swap    --base ../shared/weights/EMT_LSR_x4.pth
    python benchmarks/restore_speed.py patches
    python benchmarks/restore_speed.py nproc   --nproc 2 --images 32 --size 256 --task denoise

Each prints one JSON object. Timings are medians over repeats after a warm-up. Peak memory has
its own script, benchmarks/restore_memory.py.

`nproc` times the `adaptir restore` command itself on a folder: one process of one thread, then
`torchrun --nproc-per-node N` with one thread per process (ADAPTIR_THREADS=1), and checks that
both wrote the same files. It reports the whole command (interpreter start and base loading
included) and the restore phase alone (per image times from --json; process r restores images
r, r + N, ...). `--baseline-repo DIR` also times the one-process command from another checkout
(e.g. the main branch), to see that one process did not get slower.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

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


def _timed_restore(command: list[str], out: Path, cwd: Path) -> tuple[float, list[dict]]:
    """Wall seconds of one restore command and its per-image JSON records."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADAPTIR_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([*command, str(out), "--overwrite", "--quiet", "--json"], env=env, cwd=cwd,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout)["images"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def nproc(args: argparse.Namespace) -> dict:
    folder = Path(args.workdir) / f"nproc-{args.images}x{args.size}"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for index in range(args.images):
        pixels = _smooth_image(args.size, args.size)[0].permute(1, 2, 0).numpy()
        Image.fromarray((pixels * 255).round().astype(np.uint8)).save(folder / f"{index:03d}.png")
    restore = ["-m", "adaptir_cli", "restore", str(folder), "--task", args.task, "--device", "cpu",
               *(["--base", str(args.base)] if args.base else [])]
    repo = Path(__file__).resolve().parents[1]
    load_before = os.getloadavg()
    one, one_images = _timed_restore([sys.executable, *restore], Path(args.workdir) / "nproc-one", repo)
    many, many_images = _timed_restore(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.nproc), "--master-addr",
         "127.0.0.1", "--master-port", str(_free_port()), *restore], Path(args.workdir) / "nproc-many", repo,
    )
    same = all((Path(args.workdir) / "nproc-one" / f.name).read_bytes() == (Path(args.workdir) / "nproc-many" / f.name).read_bytes()
               for f in sorted(folder.iterdir()))
    # The restore phase: one process restores every image; under torchrun the slowest share decides.
    phase_one = sum(image["seconds"] for image in one_images)
    phase_many = max(sum(image["seconds"] for image in many_images[rank :: args.nproc]) for rank in range(args.nproc))
    result = {
        "images": f"{args.images} x {args.size}x{args.size}", "task": args.task, "base": str(args.base or "default"),
        "one_process_seconds": round(one, 2), f"torchrun_{args.nproc}_seconds": round(many, 2),
        "speedup_command": round(one / many, 2),
        "restore_phase_one_process_seconds": round(phase_one, 2),
        f"restore_phase_torchrun_{args.nproc}_seconds": round(phase_many, 2),
        "speedup_restore_phase": round(phase_one / phase_many, 2), "same_files": same,
    }
    if args.baseline_repo:
        before, before_images = _timed_restore([sys.executable, *restore], Path(args.workdir) / "nproc-baseline",
                                               Path(args.baseline_repo).resolve())
        result["baseline_repo_one_process_seconds"] = round(before, 2)
        result["baseline_repo_restore_phase_seconds"] = round(sum(image["seconds"] for image in before_images), 2)
    result["load_average_before_after"] = [round(v, 2) for v in (*load_before, *os.getloadavg())]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("tiling", "swap", "patches", "nproc"))
    parser.add_argument("--base", type=Path)
    parser.add_argument("--task", default="sr4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", default="/tmp/adaptir-bench")
    parser.add_argument("--nproc", type=int, default=2, help="nproc: processes under torchrun")
    parser.add_argument("--images", type=int, default=32, help="nproc: images in the folder")
    parser.add_argument("--baseline-repo", type=Path, help="nproc: also time one process from this checkout")
    args = parser.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    result = {"benchmark": args.what, **globals()[args.what](args)}
    result["machine"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
