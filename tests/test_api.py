"""The library page (docs/library.md) runs as written: every code block, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "library.md"


def test_every_code_block_of_the_library_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)  # the page writes photos/, restored/ and an adapter file
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    assert (tmp_path / "restored" / "a.png").is_file() and (tmp_path / "lowlight.safetensors").is_file()
