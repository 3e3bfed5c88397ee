"""Where installed weights live: $ADAPTIR_HOME, or the platform's user cache folder.

Every file enters the cache through adaptir_cli.atomic_files, so an interrupted download or
conversion never leaves a half-written file under a real name, nor (once the next download
starts) an abandoned temporary file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import platformdirs

from adaptir_cli import atomic_files
from adaptir_cli.weights.manifest import WeightsEntry

Status = Literal["bundled", "cached", "missing"]


def home() -> Path:
    override = os.environ.get("ADAPTIR_HOME")
    return Path(override).expanduser() if override else Path(platformdirs.user_cache_dir("adaptir"))


def models_dir() -> Path:
    return home() / "models"


def cached_model(name: str) -> Path:
    """Where `adaptir models fetch/import NAME` puts the converted base."""
    return models_dir() / f"{name}.safetensors"


def local_file(entry: WeightsEntry) -> Path:
    """The file a base or adapter loads from on this machine (which may not exist yet)."""
    # The manifest sets `path` exactly for bundled entries.
    return entry.path if entry.path is not None else cached_model(entry.name)


def status(entry: WeightsEntry) -> Status:
    if entry.kind == "bundled":
        return "bundled"
    return "cached" if cached_model(entry.name).is_file() else "missing"


@contextmanager
def download_file(stem: str, suffix: str) -> Iterator[Path]:
    """An empty temporary file in the cache folder for a download, removed on exit.

    The `.part` marker tells a user what it is; `suffix` keeps the format recognisable. Files
    that killed downloads left behind are removed first.
    """
    atomic_files.remove_stale_temporaries(models_dir())
    with atomic_files.scratch_file(models_dir() / stem, f".part{suffix}") as path:
        yield path
