"""Atomic writes: one helper for every writer, umask-respecting modes, no clobbering, and the
temporary files a kill -9 leaves behind removed by the next run (and only those)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from adaptir_cli.atomic_files import STALE_AFTER_SECONDS, TargetExistsError, atomic_write, remove_stale_temporaries

# A writer killed by SIGKILL in the middle of a write, as `kill -9` would.
_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from adaptir_cli.atomic_files import atomic_write
atomic_write(Path(sys.argv[1]), lambda handle: os.kill(os.getpid(), signal.SIGKILL))
"""


def _age(path: Path, seconds: float) -> Path:
    past = time.time() - seconds
    os.utime(path, (past, past))
    return path


def _killed_write(target: Path) -> Path:
    """Run a writer that is killed mid-write; returns the temporary file it left."""
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(target)], capture_output=True)
    assert done.returncode == -9, done.stderr
    (left,) = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
    return left


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and pid checks are POSIX")
def test_only_our_own_abandoned_temporaries_are_removed(tmp_path: Path) -> None:
    abandoned = _age(_killed_write(tmp_path / "photo.png"), STALE_AFTER_SECONDS + 60)
    young = _killed_write(tmp_path / "young.png")  # writer dead, but maybe another machine's
    live = tmp_path / f".live.png.{os.getpid()}-0123abcd.tmp"
    foreign = [tmp_path / ".photo.png.tmp", tmp_path / ".emt-x4.safetensors.part", tmp_path / "x.99999999-zz.tmp"]
    for path in [live, *foreign]:
        path.write_bytes(b"")
        _age(path, STALE_AFTER_SECONDS + 60)

    assert remove_stale_temporaries(tmp_path) == [abandoned]
    assert young.exists() and live.exists() and all(p.exists() for p in foreign)
    assert remove_stale_temporaries(tmp_path / "missing") == []


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and pid checks are POSIX")
def test_restore_cache_and_training_remove_what_a_killed_run_left(tmp_path: Path, tiny_emt_file: Path) -> None:
    from typer.testing import CliRunner

    from adaptir_cli.cli.app import app
    from adaptir_cli.weights.cache import download_file, models_dir

    out = tmp_path / "out"
    out.mkdir()
    left_by_restore = _age(_killed_write(out / "x.png"), STALE_AFTER_SECONDS + 60)
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(image)
    result = CliRunner().invoke(app, ["restore", str(image), str(out), "--task", "sr2", "--base", str(tiny_emt_file), "-q"])
    assert result.exit_code == 0, result.output
    assert not left_by_restore.exists()

    models_dir().mkdir(parents=True)
    left_by_download = _age(_killed_write(models_dir() / "emt-x4"), STALE_AFTER_SECONDS + 60)
    with download_file("emt-x4", ".pth") as scratch:
        assert scratch.name.endswith(".part.pth")
    assert not left_by_download.exists() and not scratch.exists()


def test_no_clobber_write_refuses_a_file_that_appeared_meanwhile(tmp_path: Path) -> None:
    target = tmp_path / "out.png"

    def other_run_wins(handle) -> None:
        target.write_bytes(b"the other run's output")
        handle.write(b"ours")

    with pytest.raises(TargetExistsError):
        atomic_write(target, other_run_wins, replace=False)
    assert target.read_bytes() == b"the other run's output"
    assert list(tmp_path.iterdir()) == [target], "the temporary file is removed"
    atomic_write(target, lambda handle: handle.write(b"ours"))
    assert target.read_bytes() == b"ours"


def test_no_clobber_write_works_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(*args: object) -> None:
        raise PermissionError("hard links are not supported here")

    monkeypatch.setattr(os, "link", no_links)
    atomic_write(tmp_path / "new.txt", lambda handle: handle.write(b"x"), replace=False)
    assert (tmp_path / "new.txt").read_bytes() == b"x"
    with pytest.raises(TargetExistsError):
        atomic_write(tmp_path / "new.txt", lambda handle: handle.write(b"y"), replace=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.txt"]


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_adapters_bases_and_cache_entries_follow_the_umask(tmp_path: Path, tiny_emt_file: Path) -> None:
    from adaptir_cli.adapters import AdaptIRConfig, inject, save_adapter
    from adaptir_cli.bases import load_base_file
    from adaptir_cli.training.base_file import save_base
    from adaptir_cli.training.checkpoint import write_json
    from adaptir_cli.weights.importing import convert
    from adaptir_cli.weights.manifest import BaseEntry

    previous = os.umask(0o022)
    try:
        base = load_base_file(tiny_emt_file)
        inject(base.module, base.descriptor, "adaptir", AdaptIRConfig())
        written = [
            save_adapter(tmp_path / "a.safetensors", base.module, method="adaptir", config=AdaptIRConfig(),
                         base=base, task="sr2"),
            save_base(tmp_path / "b.safetensors", torch.nn.Linear(2, 2), {"steps": 1}),
            write_json(tmp_path / "log.json", {"ok": True}),
        ]
        entry = BaseEntry(name="tiny", architecture="emt", source="https://example.org/x.pth", license="MIT",
                          description="tiny", tasks=("sr2",))
        written.append(convert(entry, tiny_emt_file, source_sha256="0" * 64))
    finally:
        os.umask(previous)
    assert {path.name: path.stat().st_mode & 0o777 for path in written} == {path.name: 0o644 for path in written}
