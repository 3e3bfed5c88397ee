"""Writing files atomically, and removing the temporary files that a killed run left behind.

Every file adaptir writes (images, adapters, bases, checkpoints, results, downloads) is written
under a hidden temporary name beside its final one and renamed into place, so it appears complete
or not at all. A kill -9 still leaves the temporary file: its name, `.NAME.PID-TOKEN.tmp` (or
`.NAME.PID-TOKEN.part.EXT` for a download), records the writer's pid, so the next run can tell
its own abandoned files (writer dead, untouched for minutes) from another program's or a live one's.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# A writer rewrites its temporary file at least this often: images and checkpoints are encoded
# in seconds and downloads stream. Younger files are left alone even when the pid looks dead
# (another machine writing to a shared folder has pids this one cannot see).
STALE_AFTER_SECONDS = 600

_TEMPORARY = re.compile(r"\..+\.(?P<pid>\d+)-[0-9a-f]{8}(?:\.tmp|\.part\.[A-Za-z0-9]+)")


class TargetExistsError(FileExistsError):
    """A no-replace write found its target already there."""


def temporary_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden name in `path`'s folder (same file system, so the final rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")


@contextmanager
def scratch_file(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """An empty temporary file beside `path`, removed on exit unless it was renamed away.

    Created with mode 0o666 (not tempfile's 0o600, which the renamed file would keep), so the
    final file gets the permissions the user's umask asks for, like any other file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_beside(path, suffix)
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666))
    try:
        yield temporary
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[BinaryIO], object], *, replace: bool = True) -> None:
    """Run `write(handle)` on a temporary file beside `path`, then move it into place in one step.

    With `replace=False` an existing `path` is never clobbered, not even one that appeared while
    `write` ran (another run writing the same output): TargetExistsError is raised instead. A
    failure anywhere removes the temporary file and leaves `path` as it was.
    """
    path = Path(path)
    with scratch_file(path) as temporary:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            _move_new(temporary, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def _move_new(temporary: Path, path: Path) -> None:
    """Rename that refuses to replace: a hard link fails atomically when `path` exists."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise TargetExistsError(errno.EEXIST, "file exists", str(path)) from None
    except OSError:
        # File systems without hard links (FAT, some network shares): check, then rename.
        if path.exists():
            raise TargetExistsError(errno.EEXIST, "file exists", str(path)) from None
        os.replace(temporary, path)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files adaptir left in `folder` when it was killed; returns them.

    Only names of adaptir's exact pattern are touched, and only when their writer is gone and
    they have not changed for STALE_AFTER_SECONDS.
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:  # a folder that does not exist (yet) holds nothing stale
        return []
    removed = []
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        try:
            if not match or not entry.is_file(follow_symlinks=False) or _writer_alive(int(match["pid"])):
                continue
            if time.time() - entry.stat(follow_symlinks=False).st_mtime < STALE_AFTER_SECONDS:
                continue
            os.unlink(entry.path)
        except OSError:  # removed meanwhile by another run, or not ours to delete
            continue
        removed.append(Path(entry.path))
    return removed


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows: age decides
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, but another user's
        return True
    return True
