"""Converted base files whose tensors were checked against their recorded digest.

Checking means hashing every tensor (about a second for IPT's 476 MB), so a file that passed is
remembered by its resolved path, size and modification time (in $ADAPTIR_HOME/verified.json): a
later run skips the hash unless the file changed since. Editing a file in place changes its
modification time, so an altered file is checked again.
"""

from __future__ import annotations

import json
from pathlib import Path

from adaptir_cli.atomic_files import atomic_write_text
from adaptir_cli.weights.cache import home


def _ledger() -> Path:
    return home() / "verified.json"


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _entries() -> dict[str, list[int]]:
    try:
        entries = json.loads(_ledger().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: everything is checked again
    return entries if isinstance(entries, dict) else {}


def is_verified(path: Path) -> bool:
    """Whether `path`, as it is now, passed the check before."""
    return _entries().get(str(Path(path).resolve())) == _stamp(Path(path))


def remember(path: Path) -> None:
    """Record that `path` passed the check; a ledger that cannot be written only costs a re-check."""
    entries = _entries()
    key = str(Path(path).resolve())
    if entries.get(key) == _stamp(Path(path)):
        return
    entries[key] = _stamp(Path(path))
    try:
        _ledger().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(_ledger(), json.dumps(entries, indent=1))
    except OSError:
        pass
