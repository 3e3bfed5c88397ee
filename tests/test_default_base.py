"""The base shipped inside the package: found without --base, offline, and actually trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from adaptir_cli.cli.app import app
from adaptir_cli.imaging.resize import imresize_uint8
from adaptir_cli.metrics import psnr
from adaptir_cli.weights.manifest import default_manifest
from adaptir_cli.weights.resolve import load_default_base


def test_default_base_is_bundled_and_matches_its_manifest_entry() -> None:
    entry = default_manifest().default_base
    assert entry is not None and entry.kind == "bundled"
    base = load_default_base()  # ADAPTIR_OFFLINE=1 is set for every test: no network involved
    assert base.name == entry.name and base.sha256 == entry.sha256
    assert {"sr2", "sr3", "sr4", "denoise", "derain"} <= set(base.descriptor.heads)
    assert entry.path is not None and entry.path.stat().st_size == entry.size


def test_restore_without_base_beats_bicubic_on_set5(shared: Path, tmp_path: Path) -> None:
    """`adaptir restore --task sr2` with nothing but the package restores better than bicubic."""
    golden = shared / "data" / "golden" / "Set5_bicubic"
    result = CliRunner().invoke(app, ["restore", str(golden / "LR_x2"), str(tmp_path), "--task", "sr2", "-q"])
    assert result.exit_code == 0, result.output
    ours, bicubic = [], []
    for hr_path in sorted((golden / "HR_x2").iterdir()):
        hr = np.asarray(Image.open(hr_path))
        lr = np.asarray(Image.open(golden / "LR_x2" / hr_path.name))
        ours.append(psnr(np.asarray(Image.open(tmp_path / hr_path.name)), hr, crop_border=2, test_y_channel=True))
        bicubic.append(psnr(imresize_uint8(lr, 2), hr, crop_border=2, test_y_channel=True))
    assert np.mean(ours) > np.mean(bicubic) + 0.5, (np.mean(ours), np.mean(bicubic))
