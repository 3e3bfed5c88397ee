"""The base shipped inside the package: found without --base, offline, and actually trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from adaptir_cli.adapters import check_compatible, read_adapter
from adaptir_cli.bases.loading import sha256_file
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


SHIPPED_TASKS = {"lr4-noise30", "lr4-jpeg30", "lowlight", "derain-heavy", "derain"}


def test_shipped_adapters_are_bundled_whole_and_fit_the_default_base() -> None:
    manifest = default_manifest()
    base = load_default_base()
    shipped = {entry.task: entry for entry in manifest.adapters.values() if entry.base == base.name}
    assert set(shipped) == SHIPPED_TASKS
    weights = [manifest.default_base.path] + [entry.path for entry in shipped.values()]
    assert sum(path.stat().st_size for path in weights) <= 12_000_000  # everything shipped, together
    for task, entry in shipped.items():
        assert entry.path.stat().st_size == entry.size and sha256_file(entry.path) == entry.sha256, task
        adapter = read_adapter(entry.path)
        assert (adapter.task, adapter.method, adapter.base_sha256) == (task, entry.method, base.sha256)
        check_compatible(adapter, base)  # no --force needed
        assert adapter.training["steps"] > 0 and adapter.training["base_unchanged"]


def test_restore_picks_the_shipped_adapter_of_each_task(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    inputs = [tmp_path / "a" / "x.png", tmp_path / "b" / "y.png"]
    for path in inputs:
        path.parent.mkdir()
        Image.fromarray(pixels).save(path)
    result = CliRunner().invoke(app, [
        "restore", *map(str, inputs), str(tmp_path / "out"), "--task", "lr4-noise30", "--task", "lowlight", "--json", "-q",
    ])
    assert result.exit_code == 0, result.output
    images = {row["task"]: row for row in json.loads(result.stdout)["images"]}
    assert Path(images["lr4-noise30"]["adapter"]).name == "compactir-default-lr4-noise30.safetensors"
    assert images["lr4-noise30"]["output_size"] == [4 * side for side in images["lr4-noise30"]["input_size"]]
    assert Path(images["lowlight"]["adapter"]).name == "compactir-default-lowlight.safetensors"


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
    assert np.mean(ours) > np.mean(bicubic) + 1.0, (np.mean(ours), np.mean(bicubic))  # 35.19 vs 33.68 dB in bench


def test_an_adapter_is_refused_for_a_task_it_was_not_trained_for(tmp_path: Path) -> None:
    """The lowlight adapter fits the base's tensors, but running it for sr2 or derain is a mistake."""
    lowlight = default_manifest().adapter_for(load_default_base().name, "lowlight").path
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    for task in ("sr2", "derain"):
        args = ["restore", str(image), str(tmp_path / task), "--task", task, "--adapter", str(lowlight), "-q"]
        refused = CliRunner().invoke(app, args)
        assert refused.exit_code == 1 and not (tmp_path / task / "x.png").exists()
        assert f"trained for task lowlight (x1), not for task {task}" in refused.stderr.replace("\n", " ")
        assert refused.stderr.count("Hint:") == 1
        forced = CliRunner().invoke(app, [*args, "--force"])
        assert forced.exit_code == 0, forced.output
