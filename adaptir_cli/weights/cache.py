"""Where installed weights live: $ADAPTIR_HOME, or the platform's user cache folder.

Every file enters the cache through `scratch_file` + `os.replace`, so an interrupted download or
conversion never leaves a half-written file under a real name.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import platformdirs

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
def scratch_file(stem: str, suffix: str) -> Iterator[Path]:
    """An empty temporary file beside the cache entries, removed on exit unless moved into place.

    It sits in the same folder as its final name so that `os.replace` is an atomic rename; the
    leading dot keeps it out of listings, the `.part` marker tells a user what it is.
    """
    directory = models_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f".{stem}.{secrets.token_hex(4)}.part{suffix}"
    # Created here rather than by tempfile.mkstemp, whose 0600 mode the renamed file would keep.
    path.open("xb").close()
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
