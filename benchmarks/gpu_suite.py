"""The GPU check of issue 13 in one command: speed and bf16 agreement against the official numbers.

    python benchmarks/gpu_suite.py --device cuda --out $OUT/gpu_suite.json [--set5 DIR]
    python benchmarks/gpu_suite.py --device cpu --quick --out quick.json [--only patch_floor]

Writes one JSON file: the environment (torch, CUDA, GPU, TF32, date) and one entry per section,
each measurement beside its target (METHOD.md section 8 and the EMT authors). A section that fails
records its error and the others still run. Timings are medians after warm-up runs, with the GPU
synchronised around each one. Sized to finish within 8 minutes on one H100/H200; `--quick` runs
tiny sizes (a 4-layer IPT, small images) so that the whole suite runs on a laptop CPU in minutes:
its numbers check the suite, they compare with no target.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from adaptir_cli import __version__
from adaptir_cli.adapters import (
    AdaptIRConfig, inject, mark_only_adapters_trainable, remove_adapters, save_adapter, train_adapters,
)
from adaptir_cli.atomic_files import atomic_write_text
from adaptir_cli.bases import LoadedBase, build_base
from adaptir_cli.bases.ipt import official_state_dict
from adaptir_cli.bases.ipt.arch import IPT, TINY_CONFIG, IPTConfig
from adaptir_cli.bench.runner import Contender, run_speed
from adaptir_cli.imaging.reading import read_image
from adaptir_cli.imaging.tensors import to_numpy, to_tensor
from adaptir_cli.metrics import psnr, to_uint8
from adaptir_cli.restorer import Restorer, TileSettings
from adaptir_cli.runtime import Precision, accelerator_info, apply_tf32_policy, autocast, resolve_device
from adaptir_cli.weights.cache import local_file
from adaptir_cli.weights.manifest import default_manifest
from adaptir_cli.weights.resolve import load_base

REPO = Path(__file__).resolve().parents[1]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")
IPT_TASK = "denoise30"
# The paper's AdaptIR width for IPT.
IPT_ADAPTER = AdaptIRConfig(hidden=24)
PYTEST_TIMEOUT_S = 240


@dataclass(frozen=True)
class Target:
    value: float
    unit: str  # "s" (lower is better) or a rate (higher is better)
    source: str


METHOD8 = "METHOD.md section 8: official IPT code, random weights, one H100"
TARGETS = {
    "ipt_restore": Target(2.36, "s", f"{METHOD8}, fp32, stride-12 tiling of a 481x321 denoise image"),
    "patch_floor_fp32": Target(492.0, "patches/s", f"{METHOD8}, plain batched 48x48 patches, fp32"),
    "patch_floor_bf16": Target(1230.0, "patches/s", f"{METHOD8}, plain batched 48x48 patches, bf16 or tf32"),
    "emt_256x256": Target(0.027, "s", "EMT authors, 256x256 input, x4, one H100"),
    "emt_480x320": Target(0.063, "s", "EMT authors, 480x320 input, x4, one H100"),
    "train_step": Target(5.9, "it/s", f"{METHOD8}, IPT + AdaptIR training step, batch 16, 48 px, fp32"),
}


@dataclass(frozen=True)
class Sizes:
    ipt: IPTConfig
    denoise_input: tuple[int, int]  # (height, width)
    patch_batch: int
    emt_inputs: tuple[tuple[int, int], ...]
    train_batch: int
    agreement_side: int  # side of the random image, and of the Set5 crops in --quick
    warmup: int
    repeats: int
    train_steps: int


FULL = Sizes(IPTConfig(), (321, 481), 64, ((256, 256), (320, 480)), 16, 256, 2, 5, 20)
# 40 x 56 px with the tiny IPT's 12 px patches at stride 4 is 96 patch forwards, as 481 x 321 at 48/40.
QUICK = Sizes(TINY_CONFIG, (40, 56), 4, ((32, 32), (32, 48)), 2, 24, 1, 2, 3)


@dataclass
class Context:
    device: torch.device
    sizes: Sizes
    quick: bool
    set5: Path | None
    workdir: Path


def measurement(ctx: Context, value: float, unit: str, target: str, **extra: Any) -> dict[str, Any]:
    """A number beside its target; `speedup` > 1 means faster than the target. --quick numbers
    come from other sizes, so they get no speedup: it would compare unlike things."""
    goal = TARGETS[target]
    entry: dict[str, Any] = {"value": round(value, 4), "unit": unit, **extra,
                             "target": {"value": goal.value, "unit": goal.unit, "source": goal.source}}
    if not ctx.quick:
        entry["speedup"] = round(goal.value / value if unit == "s" else value / goal.value, 3)
    return entry


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], ctx: Context, repeats: int | None = None) -> float:
    """Median of `repeats` (default: the sizes') runs after the warm-up ones; the GPU is
    synchronised so that every timed run holds its own kernels and no earlier ones."""
    for _ in range(ctx.sizes.warmup):
        fn()
    seconds = []
    for _ in range(repeats or ctx.sizes.repeats):
        synchronize(ctx.device)
        start = time.perf_counter()
        fn()
        synchronize(ctx.device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def ipt_base(ctx: Context) -> LoadedBase:
    """The IPT-size base with random weights (the official numbers used random weights too)."""
    torch.manual_seed(0)
    state = official_state_dict(IPT(ctx.sizes.ipt))
    return build_base(state, name="ipt-random", sha256="0" * 64, source="random")


def ipt_adapter_file(base: LoadedBase, ctx: Context) -> Path:
    """An AdaptIR file for `base`, written as finetune writes one; the base is left bare."""
    inject(base.module, base.descriptor, "adaptir", IPT_ADAPTER)
    path = save_adapter(ctx.workdir / "ipt-denoise30.safetensors", base.module, method="adaptir",
                        config=IPT_ADAPTER, base=base, task=IPT_TASK)
    remove_adapters(base.module)
    return path


def tf32(device: torch.device) -> bool:
    return bool(accelerator_info(device)["tf32"])


def restore_seconds(restorer: Restorer, task: str, method: Contender, size: tuple[int, int],
                    settings: TileSettings, ctx: Context) -> float:
    """restore's median seconds; restore returns its result on the CPU, which waits for the GPU."""
    report = run_speed(restorer, task, [method], size, repeats=ctx.sizes.repeats, warmup=ctx.sizes.warmup,
                       settings=settings)
    return report.results[0].median


def section_ipt_restore(ctx: Context) -> dict[str, Any]:
    base = ipt_base(ctx)
    adapter = ipt_adapter_file(base, ctx)
    height, width = ctx.sizes.denoise_input
    image = torch.rand(1, 3, height, width)
    out: dict[str, Any] = {"input": f"{width}x{height}", "adapter": f"adaptir hidden {IPT_ADAPTER.hidden}"}
    for precision in PRECISIONS:
        restorer = Restorer(base, device=str(ctx.device), precision=precision)
        restorer.use(IPT_TASK, adapter)
        _, stats = restorer.restore(image, TileSettings())  # the patch count of the default tiling
        seconds = restore_seconds(restorer, IPT_TASK, Contender("adaptir", "adapter", restorer.adapter), (height, width),
                                  TileSettings(), ctx)
        out[precision] = {
            "seconds": measurement(ctx, seconds, "s", "ipt_restore"),
            "patch_forwards": stats.tiles,
            "patches_per_second": measurement(ctx, stats.tiles / seconds, "patches/s", f"patch_floor_{precision}"),
            "tile": dict(zip(("tile", "overlap"), restorer.tile_settings(TileSettings()))),
            "tf32": tf32(ctx.device),
        }
    return out


def section_patch_floor(ctx: Context) -> dict[str, Any]:
    base = ipt_base(ctx)
    base.module.to(ctx.device)
    side = ctx.sizes.ipt.patch_size
    patches = torch.rand(ctx.sizes.patch_batch, 3, side, side, device=ctx.device)
    out: dict[str, Any] = {"batch": ctx.sizes.patch_batch, "patch": side}
    for precision in PRECISIONS:
        apply_tf32_policy(precision)

        @torch.inference_mode()
        def forward() -> None:
            with autocast(ctx.device, precision):
                base(patches, IPT_TASK)

        rate = ctx.sizes.patch_batch / median_seconds(forward, ctx)
        out[precision] = {"patches_per_second": measurement(ctx, rate, "patches/s", f"patch_floor_{precision}"),
                          "tf32": tf32(ctx.device)}
    return out


def section_emt_x4(ctx: Context) -> dict[str, Any]:
    restorer = Restorer(load_base("emt-x4"), device=str(ctx.device), precision="fp32")
    method = Contender("emt-x4", "base")
    out: dict[str, Any] = {"precision": "fp32", "tf32": tf32(ctx.device)}
    # Each input records the target of the full-size input it stands for (the same one without --quick).
    for (height, width), full in zip(ctx.sizes.emt_inputs, FULL.emt_inputs):
        for label, settings in (("whole", TileSettings(tile=0)), ("default_tiles", TileSettings())):
            seconds = restore_seconds(restorer, "sr4", method, (height, width), settings, ctx)
            tile, overlap = restorer.tile_settings(settings)
            out[f"{width}x{height}_{label}"] = measurement(
                ctx, seconds, "s", f"emt_{full[1]}x{full[0]}", tile=tile, overlap=overlap
            )
    return out


def section_training(ctx: Context) -> dict[str, Any]:
    base = ipt_base(ctx)
    inject(base.module, base.descriptor, "adaptir", IPT_ADAPTER)
    trainable = mark_only_adapters_trainable(base.module)
    train_adapters(base.module)
    module = base.module.to(ctx.device)
    head = base.descriptor.head(IPT_TASK).index
    side, scale = ctx.sizes.ipt.patch_size, base.descriptor.pixel_range
    lq = torch.rand(ctx.sizes.train_batch, 3, side, side, device=ctx.device)
    gt = lq.clone()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    out: dict[str, Any] = {"batch": ctx.sizes.train_batch, "patch": side, "trainable_parameters": trainable,
                           "step": "forward, L1, backward, clip 1.0, AdamW (training/loop.py)"}
    for precision in PRECISIONS:
        apply_tf32_policy(precision)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast(ctx.device, precision):
                output = module(lq * scale, head) / scale
            F.l1_loss(output.float(), gt).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()

        rate = 1.0 / median_seconds(step, ctx, ctx.sizes.train_steps)
        out[precision] = {"steps_per_second": measurement(ctx, rate, "it/s", "train_step"), "tf32": tf32(ctx.device)}
    return out


def agreement_images(ctx: Context) -> Iterator[tuple[str, torch.Tensor]]:
    """Set5 HR (cropped in --quick, where a full image would take minutes) or one smooth random image."""
    side = ctx.sizes.agreement_side
    if ctx.set5 is None:
        coarse = torch.rand(1, 3, max(2, side // 8), max(2, side // 8), generator=torch.Generator().manual_seed(0))
        yield "smooth-random", F.interpolate(coarse, size=(side, side), mode="bicubic").clamp(0, 1)
        return
    for path in sorted(ctx.set5.glob("*.png")):
        image = to_tensor(read_image(path).rgb)
        yield path.stem, image[..., :side, :side] if ctx.quick else image


def bf16_agreement(base: LoadedBase, task: str, ctx: Context) -> dict[str, Any]:
    """PSNR of bf16 outputs against fp32 ones, both quantised to 8 bits as the bench protocol does."""
    restorers = {p: Restorer(base, device=str(ctx.device), precision=p) for p in PRECISIONS}
    scores = {}
    for name, image in agreement_images(ctx):
        outputs = {}
        for precision, restorer in restorers.items():
            apply_tf32_policy(precision)  # the restorers share one process-wide TF32 switch
            restorer.use(task)
            outputs[precision] = to_uint8(to_numpy(restorer.restore(image)[0]))
        scores[name] = psnr(outputs["bf16"], outputs["fp32"])
    # Identical outputs score inf, which strict JSON cannot hold.
    shown = {name: round(db, 2) if np.isfinite(db) else "identical" for name, db in scores.items()}
    return {"task": task, "psnr_bf16_vs_fp32_db": shown, "min_db": shown[min(scores, key=scores.get)]}


def section_bf16_agreement(ctx: Context) -> dict[str, Any]:
    out: dict[str, Any] = {"images": "Set5 HR" if ctx.set5 else "one smooth random image"}
    bases: dict[str, Callable[[], LoadedBase]] = {"ipt-random": lambda: ipt_base(ctx)}
    for name, entry in default_manifest().bases.items():
        if local_file(entry).is_file():
            bases[name] = lambda name=name: load_base(name)
        else:
            out[name] = {"status": "not installed"}
    for name, load in bases.items():
        out[name] = _guarded(lambda: _agreement_for(load(), ctx))
    return out


def _agreement_for(base: LoadedBase, ctx: Context) -> dict[str, Any]:
    if not base.descriptor.supports_bf16:
        return {"supports_bf16": False, "note": "the descriptor does not declare bf16 safe: fp32 only, bf16 not forced"}
    task = IPT_TASK if IPT_TASK in base.descriptor.heads else next(iter(base.descriptor.heads))
    return {"supports_bf16": True, **bf16_agreement(base, task, ctx)}


def section_pytest_cuda(ctx: Context) -> dict[str, Any]:
    if ctx.device.type != "cuda":
        return {"status": "skipped", "reason": "the cuda tests need --device cuda"}
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=PYTEST_TIMEOUT_S)
    return {"command": " ".join(command[1:]), "returncode": done.returncode,
            "last_lines": (done.stdout + done.stderr).strip().splitlines()[-15:]}


SECTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "ipt_restore": section_ipt_restore,
    "patch_floor": section_patch_floor,
    "emt_x4": section_emt_x4,
    "training": section_training,
    "bf16_agreement": section_bf16_agreement,
    "pytest_cuda": section_pytest_cuda,
}


def _guarded(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one section (or one base): an error is recorded, not raised, so the rest still runs."""
    start = time.perf_counter()
    try:
        result = {"status": "ok", **fn()}
    except Exception as error:  # noqa: BLE001 - any failure is a result of the suite
        result = {"status": "error", "error": f"{type(error).__name__}: {error}",
                  "traceback": traceback.format_exc().splitlines()[-6:]}
    result["seconds_taken"] = round(time.perf_counter() - start, 2)
    return result


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "adaptir": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "device": str(device), "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
        **accelerator_info(device),
        "tf32_note": "TF32 follows the precision (runtime.apply_tf32_policy): off for fp32, on for bf16; "
                     "each measurement records it",
    }


def run_suite(ctx: Context, only: list[str] | None, out: Path) -> dict[str, Any]:
    """Run the chosen sections, rewriting `out` after each: a run stopped at its time limit still
    leaves what it measured, the sections it did not reach marked "not run"."""
    result: dict[str, Any] = {"suite": "gpu_suite", "quick": ctx.quick, "complete": False,
                              "environment": environment(ctx.device), "sections": {}}
    for name in SECTIONS:
        chosen = not only or name in only
        result["sections"][name] = {"status": "not run", "reason": "the suite stopped before this section"} if chosen \
            else {"status": "skipped", "reason": "not chosen by --only"}
    for name, section in SECTIONS.items():
        if result["sections"][name]["status"] == "skipped":
            continue
        _write(out, result)
        print(f"gpu_suite: {name} ...", file=sys.stderr, flush=True)
        result["sections"][name] = _guarded(lambda: section(ctx))
    result["complete"] = True
    _write(out, result)
    return result


def _write(out: Path, result: dict[str, Any]) -> None:
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the suite on a CPU in minutes")
    parser.add_argument("--only", action="append", choices=list(SECTIONS), help="run this section (repeatable)")
    parser.add_argument("--set5", type=Path, help="Set5 HR folder for the bf16 agreement (else a random image)")
    args = parser.parse_args(argv)
    if args.quick and args.device == "cpu":
        torch.set_num_threads(1)  # tiny tensors: thread hand-offs would cost more than the maths
    with tempfile.TemporaryDirectory() as folder:
        ctx = Context(resolve_device(args.device), QUICK if args.quick else FULL, args.quick, args.set5, Path(folder))
        result = run_suite(ctx, args.only, args.out)
    print(f"gpu_suite: wrote {args.out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
