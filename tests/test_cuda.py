"""CUDA checks (`pytest -m cuda`): fp32/bf16 restores per base, out-of-memory retries with smaller
tiles, the restore pipeline (tile batch from the free memory, pinned copies, cached window cuts),
and 2-rank NCCL data parallelism (tests/test_restore_pipeline.py adds the written bytes). Every test skips, with the reason, on a machine without a
GPU; benchmarks/gpu_suite.py runs them on one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adaptir_cli.bases import LoadedBase, build_base, load_base_file
from adaptir_cli.bases.compactir.arch import cut_windows
from adaptir_cli.bases.ipt import official_state_dict
from adaptir_cli.bases.ipt.arch import IPT, IPTConfig
from adaptir_cli.host_copies import HostCopies
from adaptir_cli.imaging.tensors import to_numpy
from adaptir_cli.metrics import psnr, to_uint8
from adaptir_cli.restorer import Restorer, TileSettings
from adaptir_cli.tasks import UnknownTaskError, get_task
from adaptir_cli.weights.manifest import default_manifest
from adaptir_cli.weights.resolve import load_base

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is false"),
]

# fp32 on the GPU (TF32 off) against fp32 on the CPU: other kernels, so float rounding only.
FP32_TOLERANCE = 0.5 / 255  # half an 8-bit step
# bf16 keeps 8 significant bits inside the body; the 8-bit outputs must still agree to this PSNR.
BF16_MIN_PSNR_DB = 40.0


def _ipt_random() -> LoadedBase:
    torch.manual_seed(0)
    return build_base(official_state_dict(IPT(IPTConfig())), name="ipt-random", sha256="0" * 64, source="random")


def _bases() -> dict[str, Callable[[], LoadedBase]]:
    shipped = {name: (lambda name=name: load_base(name))
               for name, entry in default_manifest().bases.items() if entry.kind == "bundled"}
    return {**shipped, "ipt-random": _ipt_random}


def _task(base: LoadedBase) -> str:
    """The first of the base's heads that names a task (per-task IPT files call theirs "x1")."""
    for head in base.descriptor.heads:
        try:
            return get_task(head).name
        except UnknownTaskError:
            continue
    raise AssertionError(f"{base.name} has no head named after a task: {list(base.descriptor.heads)}")


def _smooth(height: int, width: int) -> torch.Tensor:
    """Natural-image-like content: EMT is chaotic on uniform noise."""
    coarse = torch.rand(1, 3, height // 8, width // 8, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic").clamp(0, 1)


def _restore(base: LoadedBase, task: str, image: torch.Tensor, device: str, precision: str) -> torch.Tensor:
    restorer = Restorer(base, device=device, precision=precision)
    restorer.use(task)
    output, stats = restorer.restore(image)
    assert stats.fp32_recomputed == 0, "bf16 produced non-finite tiles"
    return output


@pytest.mark.parametrize("name", list(_bases()))
def test_restore_on_cuda_agrees_with_the_cpu_in_fp32_and_with_fp32_in_bf16(name: str) -> None:
    base = _bases()[name]()
    task, image = _task(base), _smooth(64, 64)
    cpu = _restore(base, task, image, "cpu", "fp32")
    gpu = _restore(base, task, image, "cuda", "fp32")
    assert (gpu - cpu).abs().max() <= FP32_TOLERANCE
    if not base.descriptor.supports_bf16:
        return  # bf16 is not verified for this base: restore never runs it in bf16 unless asked
    reduced = _restore(base, task, image, "cuda", "bf16")
    assert psnr(to_uint8(to_numpy(reduced)), to_uint8(to_numpy(gpu))) >= BF16_MIN_PSNR_DB


def test_a_cuda_out_of_memory_error_is_retried_with_smaller_tiles(
    tiny_emt_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    restorer = Restorer(load_base_file(tiny_emt_file), device="cuda", precision="fp32")
    restorer.use("sr2")
    image, big = _smooth(64, 64), TileSettings(tile=64, overlap=8, batch=1)
    forward = restorer._forward
    held: list[weakref.ref] = []

    def out_of_memory_on_big_tiles(tiles: torch.Tensor, stats) -> torch.Tensor:
        if tiles.shape[-1] >= big.tile:
            activations = torch.empty(64, 1024, 1024, device="cuda")  # what the failed attempt held
            held.append(weakref.ref(activations))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        assert held[0]() is None, "the failed attempt's GPU tensors are still alive at the retry"
        return forward(tiles, stats)

    monkeypatch.setattr(restorer, "_forward", out_of_memory_on_big_tiles)
    output, stats = restorer.restore(image, big)
    assert stats.oom_retries == 1 and 0 < stats.tile < big.tile
    assert f"retried with tile {stats.tile}" in stats.notes[0]
    monkeypatch.setattr(restorer, "_forward", forward)
    expected, _ = restorer.restore(image, TileSettings(tile=stats.tile, overlap=big.overlap, batch=1))
    assert torch.allclose(output, expected, atol=1e-6)


def test_the_tile_batch_fills_the_free_memory_and_changes_nothing_but_speed(tiny_emt_file: Path) -> None:
    restorer = Restorer(load_base_file(tiny_emt_file), device="cuda", precision="fp32")
    restorer.use("sr2")
    image, tiled = _smooth(256, 256), TileSettings(tile=64, overlap=8)
    batched, stats = restorer.restore(image, tiled)
    # A tiny model leaves most of a GPU free: many of its 64 px tiles fit in one forward.
    assert 1 < stats.batch <= stats.tiles, stats
    one_by_one, single = restorer.restore(image, TileSettings(tile=64, overlap=8, batch=1))
    assert single.batch == 1 and single.tiles == stats.tiles
    assert (batched - one_by_one).abs().max() <= 1e-4


def test_pinned_copies_arrive_in_order_with_a_bounded_number_in_flight() -> None:
    delivered: list[tuple[int, torch.Tensor]] = []
    copies = HostCopies(torch.device("cuda"), lambda top, left, block: delivered.append((top, block)), in_flight=2)
    blocks = [torch.full((64, 48, 3), index, dtype=torch.uint8, device="cuda") for index in range(5)]
    for index, block in enumerate(blocks):
        copies.put(index, 0, block * 2)  # a temporary: its memory must outlive the copy (record_stream)
        assert len(delivered) == max(0, index + 1 - 2)
    copies.flush()
    assert [top for top, _ in delivered] == [0, 1, 2, 3, 4]
    for index, (_, host) in enumerate(delivered):
        assert host.device.type == "cpu" and host.is_pinned()
        assert torch.equal(host, torch.full((64, 48, 3), 2 * index, dtype=torch.uint8))


def test_window_cuts_are_cached_on_the_device() -> None:
    cut = cut_windows(32, 48, 8, True, "cuda")
    assert cut.order.device.type == cut.inverse.device.type == cut.wrap_mask.device.type == "cuda"
    assert cut is cut_windows(32, 48, 8, True, torch.device("cuda", torch.cuda.current_device()))
    on_cpu = cut_windows(32, 48, 8, True, "cpu")
    assert torch.equal(cut.order.cpu(), on_cpu.order) and torch.equal(cut.wrap_mask.cpu(), on_cpu.wrap_mask)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="the NCCL smoke test needs 2 GPUs")
def test_two_rank_nccl_finetune_runs(tiny_emt_file: Path, tmp_path: Path) -> None:
    gt = tmp_path / "gt"
    gt.mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(gt / f"img{index}.png")
    out = tmp_path / "ddp.safetensors"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(_free_port()), "-m", "adaptir_cli", "finetune", "--base", str(tiny_emt_file),
               "--task", "sr2", "--gt", str(gt), "--steps", "2", "--batch", "2", "--patch", "20", "--device", "cuda",
               "--workers", "0", "--val-fraction", "0.25", "--val-crop", "16", "--quiet", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    environment = json.loads(out.with_suffix(".json").read_text())["summary"]["environment"]
    assert environment["processes"] == 2 and environment["device"].startswith("cuda")
