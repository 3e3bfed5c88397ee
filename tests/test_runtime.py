"""Device-side policies that CPU tests can check: TF32 follows --precision and is recorded with
the GPU and CUDA version in bench results and training logs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from adaptir_cli.bases import load_base_file
from adaptir_cli.cli.app import app
from adaptir_cli.restorer import Restorer
from adaptir_cli.training.checkpoint import History
from adaptir_cli.training.loop import TrainResult


@pytest.fixture
def tf32_flags() -> Iterator[None]:
    """PyTorch's own defaults to start from; the process-wide flags are put back afterwards."""
    saved = _tf32()
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _tf32() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def test_fp32_means_fp32_and_bf16_may_use_tf32(tiny_emt_file: Path, tf32_flags: None) -> None:
    base = load_base_file(tiny_emt_file)
    Restorer(base, device="cpu", precision="fp32")
    assert _tf32() == (False, False), "fp32 convolutions must not silently run in TF32"
    Restorer(base, device="cpu", precision="bf16")
    assert _tf32() == (True, True)


def test_bench_json_records_gpu_cuda_and_tf32(tmp_path: Path, tiny_emt_file: Path, tf32_flags: None) -> None:
    out = tmp_path / "speed.json"
    result = CliRunner().invoke(app, [
        "bench", "--task", "sr2", "--base", str(tiny_emt_file), "--speed", "--size", "16x16", "--repeats", "1",
        "--precision", "fp32", "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    accelerator = json.loads(out.read_text())["accelerator"]
    assert accelerator == {"gpu": None, "cuda": torch.version.cuda, "tf32": False}


def test_training_environment_records_gpu_cuda_and_tf32(tf32_flags: None) -> None:
    result = TrainResult(History(), steps=1, trainable_parameters=1, world=1, device="cpu", precision="fp32")
    environment = result.environment()
    assert {"gpu", "cuda", "tf32"} <= set(environment) and environment["cuda"] == torch.version.cuda
