"""EMT restore seconds with its fused attention against the loop it replaced, alternating in one process.

    OMP_NUM_THREADS=1 python benchmarks/emt_attention_ab.py [--size 256] [--repeats 3] [--base emt-x4]

Each round restores the same smooth input once with the attention EMT had before the fused call (a
Python loop over slices of windows, every score formed: `sliced` below, kept here as the reference)
and once with the current fused `scaled_dot_product_attention`; the first round warms up. Alternating in one
process makes a load from other jobs hit both alike, which separate before/after runs on a shared
machine cannot promise. Also prints the largest output difference (0..1 scale). The result feeds
docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from adaptir_cli.bases.emt import arch
from adaptir_cli.restorer import Restorer, TileSettings
from adaptir_cli.weights.resolve import load_base


def sliced(q: torch.Tensor, v: torch.Tensor, score_elements: int = 1 << 22) -> torch.Tensor:
    """softmax(q q^T) v, a slice of windows at a time (16 MB of scores per slice), as before."""
    step = max(1, score_elements // q.shape[1] ** 2)
    parts = zip(q.split(step), v.split(step))
    return torch.cat([torch.softmax(qs @ qs.transpose(-2, -1), dim=-1) @ vs for qs, vs in parts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base", default="emt-x4")
    args = parser.parse_args()
    restorer = Restorer(load_base(args.base), device="cpu", precision="fp32")
    restorer.use(next(iter(restorer.base.descriptor.heads)))
    coarse = torch.rand(1, 3, args.size // 8 + 2, args.size // 8 + 2, generator=torch.Generator().manual_seed(0))
    image = F.interpolate(coarse, size=(args.size, args.size), mode="bicubic").clamp(0, 1)  # EMT is chaotic on noise
    variants = {"sliced (before)": sliced, "fused (after)": arch._attend}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, torch.Tensor] = {}
    for round_ in range(args.repeats + 1):
        for name, attend in variants.items():
            arch._attend = attend
            start = time.perf_counter()
            outputs[name], _ = restorer.restore(image, TileSettings())
            if round_:
                seconds[name].append(time.perf_counter() - start)
    arch._attend = variants["fused (after)"]
    for name, runs in seconds.items():
        print(f"{name:16} median {statistics.median(runs):7.2f} s   runs {[round(s, 2) for s in runs]}")
    difference = (outputs["sliced (before)"] - outputs["fused (after)"]).abs().max().item()
    print(f"largest output difference {difference:.2e}; {args.base}, {args.size}x{args.size}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")


if __name__ == "__main__":
    main()
