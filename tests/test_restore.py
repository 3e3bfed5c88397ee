"""The restore pipeline end to end: job planning, the Restorer, and the `adaptir restore` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from adaptir_cli.bases import load_base_file
from adaptir_cli.cli.app import app
from adaptir_cli.file_jobs import JobPlanError, plan_jobs
from adaptir_cli.metrics import psnr
from adaptir_cli.restorer import Restorer, RestoreError, TileSettings

runner = CliRunner()


def _write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _images(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    _write_png(folder / "rgb.png", rng.integers(0, 256, (40, 36, 3), dtype=np.uint8))
    _write_png(folder / "sub" / "gray.png", rng.integers(0, 256, (30, 33), dtype=np.uint8))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def test_plan_jobs_expands_folders_and_names_outputs(tmp_path: Path) -> None:
    inputs = _images(tmp_path / "in")
    jobs = plan_jobs([inputs], tmp_path / "out", ["sr2"], suffix="_x2", ext="tif")
    assert sorted(j.output.name for j in jobs) == ["broken_x2.tif", "rgb_x2.tif"]
    recursive = plan_jobs([inputs], tmp_path / "out", ["sr2"], recursive=True)
    assert tmp_path / "out" / "sub" / "gray.png" in [j.output for j in recursive]


def test_plan_jobs_refuses_ambiguous_requests(tmp_path: Path) -> None:
    inputs = _images(tmp_path / "in")
    with pytest.raises(JobPlanError, match="one per input"):
        plan_jobs([inputs, inputs / "rgb.png"], tmp_path / "out", ["sr2", "sr2", "sr2"])
    with pytest.raises(JobPlanError, match="overwritten by its own output"):
        plan_jobs([inputs / "rgb.png"], inputs, ["sr2"])
    with pytest.raises(JobPlanError, match="both be written"):
        plan_jobs([inputs / "rgb.png", inputs / "rgb.png"], tmp_path / "out", ["sr2"])
    with pytest.raises(JobPlanError, match="not found"):
        plan_jobs([tmp_path / "missing.png"], tmp_path / "out", ["sr2"])


def test_restorer_tiled_and_whole_image_agree_in_shape(tiny_emt_file: Path) -> None:
    restorer = Restorer(load_base_file(tiny_emt_file), device="cpu")
    restorer.use("sr2")
    image = torch.rand(1, 3, 70, 50)
    whole, whole_stats = restorer.restore(image, TileSettings(tile=0))
    tiled, tiled_stats = restorer.restore(image, TileSettings(tile=32, overlap=8, batch=3))
    assert whole.shape == tiled.shape == (1, 3, 140, 100)
    assert whole_stats.tiles == 1 and tiled_stats.tiles > 1
    assert 0 <= float(tiled.min()) and float(tiled.max()) <= 1


def test_tiles_too_small_for_the_base_overlap_are_raised_with_a_note(tiny_emt_file: Path) -> None:
    restorer = Restorer(load_base_file(tiny_emt_file), device="cpu")
    desc = restorer.base.descriptor
    notes: list[str] = []
    tile, overlap = restorer.tile_settings(TileSettings(tile=40), notes)
    assert overlap == desc.tile_overlap == 32 and tile == 96 and tile % desc.size_multiple == 0
    assert notes == [notes[0]] and "tile raised from 64 to 96 px" in notes[0] and "--overlap" in notes[0]
    # An explicit overlap keeps the tile and says what it costs.
    notes.clear()
    assert restorer.tile_settings(TileSettings(tile=64, overlap=8), notes) == (64, 8)
    assert "below the 32 px" in notes[0]
    notes.clear()
    assert restorer.tile_settings(TileSettings(), notes) == (512, 32) and notes == []
    assert restorer.tile_batch(TileSettings()) == 1 and restorer.tile_batch(TileSettings(batch=3)) == 3


def test_restorer_refuses_tasks_the_base_cannot_do(tiny_emt_file: Path) -> None:
    restorer = Restorer(load_base_file(tiny_emt_file), device="cpu")
    with pytest.raises(Exception, match="no head for task"):
        restorer.use("sr4")
    with pytest.raises(Exception, match="no head for task"):
        restorer.use("lr4-noise30")
    with pytest.raises(RestoreError, match="call use"):
        restorer.restore(torch.rand(1, 3, 20, 20))


def test_restore_command_processes_a_folder_and_reports_failures(tmp_path: Path, tiny_emt_file: Path) -> None:
    inputs = _images(tmp_path / "in")
    out = tmp_path / "out"
    args = ["restore", str(inputs), str(out), "--task", "sr2", "--base", str(tiny_emt_file), "-r", "--json", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    statuses = {Path(r["input"]).name: r["status"] for r in summary["images"]}
    assert statuses == {"rgb.png": "ok", "gray.png": "ok", "broken.png": "failed"}
    assert Image.open(out / "rgb.png").size == (72, 80)
    gray = Image.open(out / "sub" / "gray.png")
    assert gray.mode == "L" and gray.size == (66, 60)
    assert not list(out.rglob(".*tmp*")), "no temporary files may remain"

    again = runner.invoke(app, args)
    statuses = {Path(r["input"]).name: r["status"] for r in json.loads(again.stdout)["images"]}
    assert statuses["rgb.png"] == "skipped" and statuses["broken.png"] == "failed"


def test_restore_command_mixes_adapters_on_one_loaded_base(tmp_path: Path, tiny_emt_file: Path, tiny_adapter: Path) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)
    first = _write_png(tmp_path / "a" / "x.png", image)
    second = _write_png(tmp_path / "b" / "y.png", image)
    result = runner.invoke(app, [
        "restore", str(first), str(second), str(tmp_path / "out"), "--task", "sr2",
        "--adapter", "", "--adapter", str(tiny_adapter), "--base", str(tiny_emt_file), "--json", "-q",
    ])
    assert result.exit_code == 0, result.output
    plain = np.asarray(Image.open(tmp_path / "out" / "x.png"), dtype=np.int16)
    adapted = np.asarray(Image.open(tmp_path / "out" / "y.png"), dtype=np.int16)
    assert np.abs(plain - adapted).max() > 0, "the adapter must change the output"


def test_restore_command_usage_errors_exit_2(tmp_path: Path, tiny_emt_file: Path) -> None:
    image = _write_png(tmp_path / "x.png", np.zeros((20, 20, 3), np.uint8))
    unknown = runner.invoke(app, ["restore", str(image), str(tmp_path / "o"), "--task", "sharpen"])
    assert unknown.exit_code == 2 and "unknown task" in unknown.output
    missing = runner.invoke(app, ["restore", str(tmp_path / "nope.png"), str(tmp_path / "o"), "--task", "sr2"])
    assert missing.exit_code == 2 and "not found" in missing.output
    wrong_base = runner.invoke(app, ["restore", str(image), str(tmp_path / "o"), "--task", "sr4", "--base", str(tiny_emt_file)])
    assert wrong_base.exit_code == 1 and "no head for task" in wrong_base.output


def test_restore_reproduces_emt_x2_on_set5_butterfly(tmp_path: Path, shared: Path) -> None:
    """The whole path (PNG in, base, tiles, PNG out) keeps the authors' quality: EMT.md section 11
    gives 36.036 dB for butterfly x2; tiling with the default overlap must cost < 0.01 dB."""
    lr = shared / "data" / "golden" / "Set5_bicubic" / "LR_x2" / "butterfly.png"
    hr = np.asarray(Image.open(shared / "data" / "golden" / "Set5_bicubic" / "HR_x2" / "butterfly.png"))
    base = str(shared / "weights" / "EMT_LSR_x2.pth")
    scores = {}
    for name, tiling in {"whole": ["--tile", "0"], "tiled": ["--tile", "64"]}.items():
        out = tmp_path / name
        result = runner.invoke(app, ["restore", str(lr), str(out), "--task", "sr2", "--base", base, "-q", *tiling])
        assert result.exit_code == 0, result.output
        scores[name] = psnr(np.asarray(Image.open(out / "butterfly.png")), hr, crop_border=2, test_y_channel=True)
    assert scores["whole"] == pytest.approx(36.036, abs=0.001)
    assert abs(scores["tiled"] - scores["whole"]) < 0.01, scores
