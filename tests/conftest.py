"""Shared fixtures. Real data and weights come from ../shared (or $ADAPTIR_SHARED) when present."""

from __future__ import annotations

import os
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
