"""Shared fixtures. Real data and weights come from ../shared (or $ADAPTIR_SHARED) when present."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_root() -> Path:
    return Path(os.environ.get("ADAPTIR_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared data/weights folder; tests using it skip (with the reason) when it is absent."""
    root = _shared_root()
    if not (root / "data").is_dir() or not (root / "weights").is_dir():
        pytest.skip(f"shared data not found at {root} (set ADAPTIR_SHARED to the folder holding data/ and weights/)")
    return root


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real cache or the network from a test."""
    monkeypatch.setenv("ADAPTIR_HOME", str(tmp_path_factory.mktemp("adaptir_home")))
    monkeypatch.setenv("ADAPTIR_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """For files of tiny tensors: on a shared 2-core machine, thread hand-offs cost more than the maths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_emt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random EMT x2 saved the way the authors save theirs ({"params": state_dict})."""
    from adaptir_cli.bases.emt import EMT, EMTConfig

    torch.manual_seed(1)
    model = EMT(EMTConfig(scale=2, dim=12, groups=1, layers=2, attention_layers=1))
    path = tmp_path_factory.mktemp("bases") / "tiny_emt_x2.pth"
    torch.save({"params": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def tiny_adapter(tiny_emt_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AdaptIR adapter for `tiny_emt_file` that visibly changes the output, as a trained one
    does (std 0.05 would move EMT's 0..255 output by < 1e-4)."""
    from adaptir_cli.adapters import AdaptIRConfig, inject, save_adapter
    from adaptir_cli.bases import load_base_file

    base = load_base_file(tiny_emt_file)
    config = AdaptIRConfig()
    inject(base.module, base.descriptor, "adaptir", config)
    torch.manual_seed(2)
    with torch.no_grad():
        for name, param in base.module.named_parameters():
            if ".adapter." in name:
                param.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("adapters") / "tuned.safetensors"
    return save_adapter(path, base.module, method="adaptir", config=config, base=base, task="sr2")
