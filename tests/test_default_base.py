"""The weights shipped inside the package: found without --base, offline, the same for every command."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from adaptir_cli.adapters import check_compatible, read_adapter
from adaptir_cli.bases.loading import sha256_file
from adaptir_cli.cli.app import app
from adaptir_cli.imaging.resize import imresize_uint8
from adaptir_cli.metrics import psnr
from adaptir_cli.tasks import TASKS, head_for
from adaptir_cli.weights.manifest import BUNDLED_DIR, default_manifest
from adaptir_cli.weights.resolve import base_for, load_base

REPO = Path(__file__).resolve().parents[1]
X1_BASE = "compactir-x1"  # the default of the x1 tasks (issue 12)
runner = CliRunner()


def _bundled_bases() -> list[str]:
    return [name for name, entry in default_manifest().bases.items() if entry.kind == "bundled"]


def test_every_task_has_a_bundled_default_base() -> None:
    manifest = default_manifest()
    assert set(manifest.defaults) == set(TASKS)
    assert {task: manifest.defaults[task] for task in ("sr2", "sr3", "sr4")} == {
        "sr2": "emt-x2", "sr3": "emt-x3", "sr4": "emt-x4",
    }
    x1_tasks = ("denoise", "denoise30", "denoise50", "derain-heavy", "lowlight")
    assert all(manifest.defaults[task] == X1_BASE for task in x1_tasks)
    assert manifest.defaults["derain"] == "compactir-default"  # its derain adapter scores higher on Rain100L
    assert base_for("sr4") == "emt-x4" and base_for("sr4", "lmlt-tiny-x4") == "lmlt-tiny-x4"


@pytest.mark.parametrize("name", _bundled_bases())
def test_bundled_base_loads_offline_as_its_manifest_entry(name: str) -> None:
    entry = default_manifest().bases[name]
    assert entry.path is not None and entry.path.parent == BUNDLED_DIR
    assert entry.path.stat().st_size == entry.shipped_size and sha256_file(entry.path) == entry.shipped_sha256
    base = load_base(name)  # ADAPTIR_OFFLINE=1 is set for every test: no network involved
    # The identity is the published file's sha256, so adapters trained on the .pth accept it.
    assert base.name == name and base.sha256 == entry.sha256
    for task in entry.tasks:
        head_for(TASKS[task], base.descriptor.heads)
    if entry.source != "bundled":  # a published file: its licence text ships beside it
        assert entry.license == "MIT" and "MIT License" in entry.license_file.read_text()


def test_bundled_published_bases_equal_the_published_files(shared: Path) -> None:
    """Converted, not changed: every tensor of the shipped file equals the published pickle's."""
    from adaptir_cli.bases import load_base_file

    for name, filename in {"emt-x2": "EMT_LSR_x2.pth", "lmlt-tiny-x4": "LMLT_tiny_x4.pth"}.items():
        published = shared / "weights" / filename
        ours, theirs = load_base(name).module.state_dict(), load_base_file(published).module.state_dict()
        assert ours.keys() == theirs.keys() and all(ours[k].equal(theirs[k]) for k in ours), name


# The adapters of the x1 default base, and of the first CompactIR base (kept: --base compactir-default).
X1_TASKS = {"lowlight", "derain-heavy"}
FIRST_BASE_TASKS = {"lr4-noise30", "lr4-jpeg30", "lowlight", "derain-heavy", "derain"}
# The x4 hybrids' defaults: AdaptIR on the published EMT x4 (experiments/emt-x4/adapters.sh).
EMT_X4_TASKS = {"lr4-noise30", "lr4-jpeg30"}


def test_shipped_adapters_are_bundled_whole_and_fit_their_base() -> None:
    manifest = default_manifest()
    shipped = {(entry.base, entry.task): entry for entry in manifest.adapters.values()}
    assert all(manifest.defaults[task] == X1_BASE for task in X1_TASKS)
    assert {task for base, task in shipped if base == X1_BASE} == X1_TASKS
    assert {task for base, task in shipped if base == "compactir-default"} == FIRST_BASE_TASKS
    assert {task for base, task in shipped if base == "emt-x4"} == EMT_X4_TASKS
    assert all(manifest.defaults[task] == "emt-x4" for task in EMT_X4_TASKS)
    everything = [BUNDLED_DIR / name for name in {e.path.name for e in manifest.bases.values() if e.path}]
    everything += [entry.path for entry in shipped.values()]
    assert sum(path.stat().st_size for path in everything) <= 25_000_000  # all shipped weights, together
    for (base_name, task), entry in shipped.items():
        assert entry.path.stat().st_size == entry.size and sha256_file(entry.path) == entry.sha256, task
        base = load_base(base_name)
        adapter = read_adapter(entry.path)
        assert (adapter.task, adapter.method, adapter.base_sha256) == (task, entry.method, base.sha256)
        check_compatible(adapter, base)  # no --force needed
        assert adapter.training["steps"] > 0 and adapter.training["base_unchanged"]


def _random_png(path: Path, shape: tuple[int, int, int] = (24, 20, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def test_restore_picks_the_base_and_shipped_adapter_of_each_task_loading_each_base_once(tmp_path: Path) -> None:
    inputs = [_random_png(tmp_path / d / f"{d}.png") for d in ("a", "b", "c")]
    result = runner.invoke(app, [
        "restore", *map(str, inputs), str(tmp_path / "out"),
        "--task", "lr4-noise30", "--task", "sr2", "--task", "lowlight", "--json", "-q",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    bases = [entry["name"] for entry in summary["bases"]]
    defaults = default_manifest().defaults
    assert len(bases) == len(set(bases)) and set(bases) == {defaults[t] for t in ("lr4-noise30", "sr2", "lowlight")}
    images = {row["task"]: row for row in summary["images"]}
    assert [row["input"] for row in summary["images"]] == [str(path) for path in inputs]  # the inputs' order
    assert images["sr2"]["base"] == "emt-x2" and images["sr2"]["adapter"] is None
    assert images["lowlight"]["base"] == X1_BASE
    assert Path(images["lowlight"]["adapter"]).name == f"{X1_BASE}-lowlight.safetensors"
    hybrid = default_manifest().adapter_for(default_manifest().defaults["lr4-noise30"], "lr4-noise30")
    assert Path(images["lr4-noise30"]["adapter"]).name == hybrid.path.name
    assert images["lr4-noise30"]["output_size"] == [4 * side for side in images["lr4-noise30"]["input_size"]]


def test_restore_sr4_without_base_equals_the_published_emt_x4(shared: Path, tmp_path: Path) -> None:
    image = _random_png(tmp_path / "in" / "x.png", (20, 28, 3))
    for args, out in (([], "default"), (["--base", str(shared / "weights" / "EMT_LSR_x4.pth")], "published")):
        result = runner.invoke(app, ["restore", str(image), str(tmp_path / out), "--task", "sr4", "-q", *args])
        assert result.exit_code == 0, result.output
    ours, theirs = (np.asarray(Image.open(tmp_path / out / "x.png")) for out in ("default", "published"))
    assert ours.shape == (80, 112, 3) and np.array_equal(ours, theirs)


def test_bench_without_base_scores_what_restore_uses(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    _random_png(folder / "a.png", (32, 32, 3))
    result = runner.invoke(app, ["bench", "--task", "lowlight", "--dataset", str(folder), "--json", "-", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["base"]["name"] == X1_BASE
    assert [m["label"] for m in report["methods"]] == [f"{X1_BASE}-lowlight"]
    bare = runner.invoke(app, ["bench", "--task", "lowlight", "--dataset", str(folder), "--adapter", "", "--json", "-", "-q"])
    assert bare.exit_code == 0, bare.output  # asked for: the bare base's head alone, beside no adapter
    assert [(m["label"], m["kind"]) for m in json.loads(bare.stdout)["methods"]] == [(X1_BASE, "base")]
    only = runner.invoke(app, ["bench", "--task", "sr2", "--dataset", str(folder), "--baseline-only", "--json", "-", "-q"])
    assert only.exit_code == 0, only.output
    assert [m["label"] for m in json.loads(only.stdout)["methods"]] == ["bicubic"]


def test_finetune_without_base_trains_on_the_tasks_default(tmp_path: Path) -> None:
    gt = tmp_path / "gt"
    for index in range(2):
        _random_png(gt / f"{index}.png", (40, 40, 3))
    out = tmp_path / "lowlight.safetensors"
    result = runner.invoke(app, [
        "finetune", "--task", "lowlight", "--gt", str(gt), "--out", str(out), "--steps", "1", "--batch", "1",
        "--patch", "16", "--device", "cpu", "--workers", "0", "-q",
    ])
    assert result.exit_code == 0, result.output
    assert read_adapter(out).base_sha256 == default_manifest().bases[X1_BASE].sha256


def test_restore_without_base_beats_bicubic_on_set5(shared: Path, tmp_path: Path) -> None:
    """`adaptir restore --task sr2` with nothing but the package: EMT x2, 38.31 dB on Set5 Y."""
    golden = shared / "data" / "golden" / "Set5_bicubic"
    result = runner.invoke(app, ["restore", str(golden / "LR_x2"), str(tmp_path), "--task", "sr2", "-q"])
    assert result.exit_code == 0, result.output
    ours, bicubic = [], []
    for hr_path in sorted((golden / "HR_x2").iterdir()):
        hr = np.asarray(Image.open(hr_path))
        lr = np.asarray(Image.open(golden / "LR_x2" / hr_path.name))
        ours.append(psnr(np.asarray(Image.open(tmp_path / hr_path.name)), hr, crop_border=2, test_y_channel=True))
        bicubic.append(psnr(imresize_uint8(lr, 2), hr, crop_border=2, test_y_channel=True))
    assert np.mean(ours) > np.mean(bicubic) + 4.0, (np.mean(ours), np.mean(bicubic))  # tiled 38.3 vs 33.68 dB


@pytest.mark.slow
def test_built_wheel_carries_the_bundled_weights_and_licences(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("adaptir-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    manifest = default_manifest()
    everything = (*manifest.bases.values(), *manifest.adapters.values(), *manifest.classifiers.values())
    shipped = {e.path for e in everything if e.path is not None}
    shipped |= {e.license_file for e in manifest.bases.values() if e.license_file is not None}
    for path in shipped:
        assert f"adaptir_cli/weights/bundled/{path.name}" in names, path.name
    assert "adaptir_cli/weights_manifest.toml" in names


def test_adapter_names_from_models_list_work_in_restore_and_models_info(tmp_path: Path) -> None:
    image = _random_png(tmp_path / "in" / "x.png", (24, 24, 3))
    result = runner.invoke(app, [
        "restore", str(image), str(tmp_path / "out"), "--task", "lowlight", "--adapter", f"{X1_BASE}-lowlight",
        "--json", "-q",
    ])
    assert result.exit_code == 0, result.output
    shipped = default_manifest().adapters[f"{X1_BASE}-lowlight"]
    assert json.loads(result.stdout)["images"][0]["adapter"] == str(shipped.path)
    info = runner.invoke(app, ["models", "info", f"{X1_BASE}-lowlight", "--json"])
    assert info.exit_code == 0, info.output
    details = json.loads(info.stdout)
    assert (details["task"], details["method"], details["base"], details["sha256"]) == (
        "lowlight", "adaptir", X1_BASE, shipped.sha256,
    )
    assert details["base_sha256"] == default_manifest().bases[X1_BASE].sha256
    assert details["training"]["steps"] > 0 and 0 < details["parameters"] < 100_000


def test_an_adapter_is_refused_for_a_task_it_was_not_trained_for(tmp_path: Path) -> None:
    """The lowlight adapter fits the base's tensors, but running it for sr2 or derain is a mistake."""
    lowlight = default_manifest().adapter_for("compactir-default", "lowlight").path
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    for task in ("sr2", "derain"):
        args = ["restore", str(image), str(tmp_path / task), "--task", task, "--adapter", str(lowlight), "-q",
                "--base", "compactir-default"]
        refused = runner.invoke(app, args)
        assert refused.exit_code == 1 and not (tmp_path / task / "x.png").exists()
        assert f"trained for task lowlight (x1), not for task {task}" in refused.stderr.replace("\n", " ")
        assert refused.stderr.count("Hint:") == 1
        forced = runner.invoke(app, [*args, "--force"])
        assert forced.exit_code == 0, forced.output


def _two_pixel_pattern(rgb: np.ndarray) -> float:
    """Mean amplitude, in 8-bit levels, of the 2x2 alternating (checkerboard) pattern of an image:
    zero on any flat, linear or smooth image; what a half-resolution body's phases leave behind."""
    y = rgb.astype(np.float64).mean(axis=2) * 255.0
    cells = y[:-1:2, :-1:2] - y[:-1:2, 1::2] - y[1::2, :-1:2] + y[1::2, 1::2]
    return float(np.abs(cells).mean() / 4.0)


def test_the_pattern_measure_sees_a_checkerboard_and_not_a_ramp() -> None:
    ramp = np.broadcast_to(np.linspace(0.1, 0.9, 64, dtype=np.float32)[None, :, None], (64, 64, 3))
    signs = 1.0 - 2.0 * (np.indices((64, 64)).sum(axis=0) % 2)
    checker = ramp + 1.5 / 255 * signs[..., None]  # +-1.5 levels
    assert _two_pixel_pattern(ramp) < 1e-9
    assert _two_pixel_pattern(checker) == pytest.approx(1.5)


@pytest.mark.parametrize("task", ["denoise", "lowlight", "derain"])
@pytest.mark.parametrize("level", [0.03, 0.08, 0.2])
def test_default_restore_of_a_flat_image_has_no_two_pixel_pattern(task: str, level: float) -> None:
    """The x1 heads' half-resolution body leaves each 2 x 2 phase a constant of its own on a flat
    image (the shipped low-light adapter once showed +-8 levels in flat sky), and their zero-padded
    convolutions a dark frame (up to 55 levels under low light): the phase loss trains the first
    away, the mirrored border (`Head.border`) the second."""
    from adaptir_cli.api import restore_array

    flat = np.full((96, 96, 3), level, dtype=np.float32)
    restored = restore_array(flat, task, device="cpu")
    assert _two_pixel_pattern(restored) < 0.5
    y = restored.mean(axis=2) * 255.0
    inside = y[16:-16, 16:-16].mean()
    for edge in (y[0], y[-1], y[:, 0], y[:, -1]):
        assert abs(edge.mean() - inside) < 4.0, (edge.mean(), inside)
