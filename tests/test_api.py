"""The library (adaptir_cli.api): its page (docs/library.md) runs as written, every code block in order
in one namespace, and it refuses what the commands refuse."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adaptir_cli import api
from adaptir_cli.restorer import TileSettings, TileSettingsError

DOC = Path(__file__).resolve().parents[1] / "docs" / "library.md"


def test_every_code_block_of_the_library_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)  # the page writes photos/, restored/ and an adapter file
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    assert (tmp_path / "restored" / "a.png").is_file() and (tmp_path / "lowlight.safetensors").is_file()


def test_restore_files_refuses_settings_no_image_can_run_with_before_the_first(tmp_path: Path, tiny_emt_file: Path) -> None:
    photo = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(photo)
    with pytest.raises(ValueError, match="quality must be between 1 and 100"):
        api.restore_files([photo], tmp_path / "out", "sr2", base=tiny_emt_file, quality=0, device="cpu")
    with pytest.raises(TileSettingsError, match="overlap must be between"):
        api.restore_files([photo], tmp_path / "out", "sr2", base=tiny_emt_file, device="cpu",
                          settings=TileSettings(tile=32, overlap=40))
    with pytest.raises(TileSettingsError, match="0 or more"):
        api.restore_files([photo], tmp_path / "out", "sr2", base=tiny_emt_file, device="cpu", settings=TileSettings(tile=-8))
    assert not any((tmp_path / "out").glob("*.png"))
