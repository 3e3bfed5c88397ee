"""CPU (or GPU) seconds of `adaptir restore` for each shipped base, side by side in one run.

    python benchmarks/base_speed.py [--sizes 256 512] [--repeats 2] [--device cpu] [--bases emt-x4] [--out speed.json]

For every shipped base with a super-resolution head (EMT, LMLT-tiny at x2/x3/x4, the CompactIR
default at every scale it has) and every input size, one random smooth image is restored with
restore's default tiling; the table gives the median seconds of `--repeats` runs after one warm-up
run. The result feeds the speed table in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from adaptir_cli import markdown
from adaptir_cli.bench.runner import Contender, run_speed
from adaptir_cli.restorer import Restorer, TileSettings
from adaptir_cli.weights.resolve import load_base

BASES = {
    "sr2": ("emt-x2", "lmlt-tiny-x2", "compactir-default"),
    "sr3": ("emt-x3", "lmlt-tiny-x3", "compactir-default"),
    "sr4": ("emt-x4", "lmlt-tiny-x4", "compactir-default"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bases", nargs="+", help="time only these bases (names as in BASES), e.g. emt-x4")
    parser.add_argument("--out", help="also write the rows to this JSON file")
    args = parser.parse_args()
    chosen = {task: tuple(n for n in names if not args.bases or n in args.bases) for task, names in BASES.items()}
    if not any(chosen.values()):
        known = ", ".join(sorted({n for names in BASES.values() for n in names}))
        parser.error(f"--bases {' '.join(args.bases)} names no base this script times; choose from {known}")
    rows = []
    for task, names in chosen.items():
        for name in names:
            restorer = Restorer(load_base(name), device=args.device, precision="fp32")
            for size in args.sizes:
                report = run_speed(restorer, task, [Contender(name, "base")], (size, size), repeats=args.repeats,
                                   warmup=args.warmup, settings=TileSettings())
                timing = report.results[0]
                rows.append({"task": task, "base": name, "input": f"{size}x{size}",
                             "seconds": round(timing.median, 3), "runs": [round(s, 3) for s in timing.seconds]})
                print(f"{task:4} {name:18} {size:4}x{size:<4} {timing.median:8.2f} s", flush=True)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {args.device}, fp32"
    table = [
        [task, name, *(row["seconds"] for row in rows if row["task"] == task and row["base"] == name)]
        for task, names in chosen.items() for name in names
    ]
    print("\n" + "\n".join(markdown.table(["task", "base", *(f"{s}x{s} s" for s in args.sizes)], table,
                                            "ll" + "r" * len(args.sizes))))
    print(f"\n{machine}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({"machine": machine, "repeats": args.repeats, "warmup": args.warmup, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
