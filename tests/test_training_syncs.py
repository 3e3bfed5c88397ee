"""Training without host syncs: what would make a CUDA step wait for the GPU, counted on the CPU.

A device tensor read on the host (`.item()`, `.tolist()`, `float(t)`, `.cpu()`, ...) or built from
host values (`torch.tensor([...])`, `t.new_tensor(...)`) waits for, or queues a blocking copy on,
the GPU. Those calls are counted with a torch function mode, which sees them on any device, so
the counts say what a CUDA run would do.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.overrides import TorchFunctionMode

from adaptir_cli.bases import load_base_file
from adaptir_cli.distributed import Distributed, threads_per_process
from adaptir_cli.training import batchnorm, loop, progress
from adaptir_cli.training.batchnorm import GlobalBatchNorm2d
from adaptir_cli.training.data import DataOptions, load_clean
from adaptir_cli.training.finetune import finetune
from adaptir_cli.training.loop import LoopSettings
from adaptir_cli.training.sampling import BatchSampler, BatchStream, TaskData, training_degradation
from adaptir_cli.training.schedule import Schedule

pytestmark = pytest.mark.usefixtures("one_thread")

_OPTIMIZERS = str(Path(torch.optim.__file__).parent)
# Device-to-host reads, and host-to-device copies of Python values.
HOST_SYNCS = {"item", "tolist", "__float__", "__int__", "__bool__", "__index__", "cpu", "numpy", "new_tensor", "tensor"}


class HostSyncs(TorchFunctionMode):
    """Counts the calls named in HOST_SYNCS made while it is active (this thread only)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = getattr(func, "__name__", "")
        # Adam reads its step counts with .item(): PyTorch keeps them on the CPU (capturable=False)
        # precisely so that this costs no GPU wait.
        if name in HOST_SYNCS and _OPTIMIZERS not in sys._getframe(1).f_code.co_filename:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clean")
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"img{index}.png")
    return folder


def _host_syncs_of_a_run(tiny_emt_file: Path, clean_dir: Path, out: Path, steps: int) -> list[str]:
    settings = LoopSettings(steps=steps, batch=2, patch=20, lr=1e-3, schedule=Schedule("cosine", steps, 1), workers=0)
    base = load_base_file(tiny_emt_file)
    with HostSyncs() as syncs:
        finetune(base, "sr2", out, DataOptions(gt=clean_dir), settings, device="cpu", show_progress=False)
    return syncs.calls


def test_training_reads_the_loss_once_per_progress_interval_not_every_step(
    tiny_emt_file: Path, clean_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two progress lines per run whatever its length: a run of 12 steps then reads the loss as
    # often as a run of 6, and only reading it every step would make the longer run sync more.
    monkeypatch.setattr(progress, "_PLAIN_LINES", 2)
    short = _host_syncs_of_a_run(tiny_emt_file, clean_dir, tmp_path / "short.safetensors", 6)
    long = _host_syncs_of_a_run(tiny_emt_file, clean_dir, tmp_path / "long.safetensors", 12)
    assert sorted(long) == sorted(short), (long, short)
    assert short.count("tolist") >= 2, "the losses are still read, at each progress line"


def test_the_history_keeps_every_steps_loss(tiny_emt_file: Path, clean_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "_PLAIN_LINES", 2)
    settings = LoopSettings(steps=5, batch=2, patch=20, lr=1e-3, schedule=Schedule("cosine", 5, 1), workers=0)
    outcome = finetune(load_base_file(tiny_emt_file), "sr2", tmp_path / "a.safetensors", DataOptions(gt=clean_dir),
                       settings, device="cpu", show_progress=False)
    losses = outcome.result.history.losses
    assert len(losses) == 5 and len(set(losses)) == 5 and all(0 < loss < 1 for loss in losses)


def _two_identical_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """What GlobalBatchNorm2d sees in a 2-process group whose other process holds the same samples."""
    monkeypatch.setattr(batchnorm.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(batchnorm.dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(batchnorm.dist, "all_reduce", lambda tensor, *args, **kwargs: tensor.mul_(2))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_global_batchnorm_is_the_batchnorm_of_the_global_batch_without_a_host_sync(
    momentum: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _two_identical_processes(monkeypatch)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64) * 3 + 1
    plain = nn.BatchNorm2d(4, momentum=momentum).double()
    global_ = GlobalBatchNorm2d(4, momentum=momentum).double()
    global_.load_state_dict(plain.state_dict())
    inputs = x.clone().requires_grad_(True)
    for _ in range(2):  # the second step uses the running statistics the first one left
        with HostSyncs() as syncs:
            output = global_(inputs)
            output.square().sum().backward()
        assert syncs.calls == [], "a host sync in every BatchNorm of every step"
        expected = plain(torch.cat([x, x]))[:2]
        assert torch.allclose(output, expected)
    assert torch.allclose(global_.running_mean, plain.running_mean)
    assert torch.allclose(global_.running_var, plain.running_var)
    assert int(global_.num_batches_tracked) == int(plain.num_batches_tracked) == 2
    assert global_.weight.grad is not None and torch.isfinite(global_.weight.grad).all()


def test_ddp_broadcasts_no_buffers_of_the_frozen_base(monkeypatch: pytest.MonkeyPatch) -> None:
    built: dict[str, Any] = {}

    def record(module: nn.Module, **options: Any) -> nn.Module:
        built.update(options)
        return module

    monkeypatch.setattr(loop, "DistributedDataParallel", record)
    loop._data_parallel(nn.Linear(2, 2), Distributed(0, 2, 0, torch.device("cpu")), find_unused_parameters=False)
    switch = "forward_sync_buffers" if "forward_sync_buffers" in built else "broadcast_buffers"
    assert built[switch] is False and built["device_ids"] is None


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_are_pinned_only_when_asked(workers: int, clean_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pinned: list[torch.Size] = []

    def pin_memory(tensor: torch.Tensor, *args: Any) -> torch.Tensor:  # a CPU-only torch cannot pin
        pinned.append(tensor.shape)
        return tensor.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    sampler = BatchSampler([TaskData("sr2", 0, 2, load_clean(clean_dir), training_degradation("sr2"))], 8, 2, seed=1)
    with BatchStream(sampler, range(2), last_step=3, workers=workers) as plain:
        plain.get(0)
    assert pinned == []
    with BatchStream(sampler, range(2), last_step=3, workers=workers, pin=True) as pinning:
        batch = pinning.get(0)
        assert torch.equal(batch.lq, sampler.batch(0, range(2)).lq)
    assert (2, 3, 8, 8) in pinned and (2, 3, 16, 16) in pinned


def test_cpu_threads_per_process_share_the_cores() -> None:
    # torchrun's own OMP_NUM_THREADS=1 gives way to cores / processes on this machine.
    assert threads_per_process({"LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}, cores=16) == 8
    assert threads_per_process({"LOCAL_WORLD_SIZE": "3"}, cores=16) == 5
    assert threads_per_process({"LOCAL_WORLD_SIZE": "4"}, cores=2) == 1
    assert threads_per_process({"LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "3"}, cores=16) == 3, "the user's own"
    assert threads_per_process({"LOCAL_WORLD_SIZE": "2", "ADAPTIR_THREADS": "1"}, cores=16) == 1
