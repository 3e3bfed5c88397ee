"""`adaptir bench`: the protocol, the test-set registry and discovery, the runner, outputs, the command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from adaptir_cli.bench.protocol import ProtocolError, make_protocol
from adaptir_cli.bench.runner import Contender, make_pair, run_benchmark, score_image
from adaptir_cli.cli.app import app
from adaptir_cli.data.datasets import DATASETS, BenchImage, DatasetError, PairLayout, find_dataset
from adaptir_cli.imaging.reading import read_image
from adaptir_cli.imaging.resize import imresize, modcrop
from adaptir_cli.metrics import psnr, rgb_to_y, to_uint8
from adaptir_cli.tasks import TASKS

runner = CliRunner()


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _random_images(folder: Path, count: int, shape: tuple[int, ...] = (40, 36, 3), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(count):
        _png(folder / f"img{i:02d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return folder


@pytest.fixture(autouse=True)
def _no_user_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sets are looked up in $ADAPTIR_DATA too: a developer's own copy must not leak into tests."""
    monkeypatch.delenv("ADAPTIR_DATA", raising=False)


# --- protocol -------------------------------------------------------------------------------


def test_protocol_follows_the_task() -> None:
    sr, _ = make_protocol("sr3")
    assert (sr.channel, sr.crop, sr.scale, sr.sigma) == ("y", 3, 3, None)
    hybrid, _ = make_protocol("lr4-noise30", seed=7)
    assert (hybrid.channel, hybrid.crop, hybrid.sigma, hybrid.seed) == ("y", 4, 30.0, 7)
    derain, _ = make_protocol("derain")
    assert (derain.channel, derain.crop) == ("y", 0)
    noise, degradation = make_protocol("denoise", sigma=15)
    assert (noise.channel, noise.crop, noise.sigma) == ("rgb", 0, 15.0)
    assert "sigma 15" in degradation.description and "sigma 15" in noise.describe()


@pytest.mark.parametrize(
    ("task", "sigma", "message"),
    [("denoise", None, "needs --sigma"), ("denoise30", 25, "use --task denoise --sigma 25"),
     ("sr4", 30, "denoising tasks only"), ("denoise", -5, "must be positive")],
)
def test_protocol_refuses_inconsistent_noise_levels(task: str, sigma: float | None, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        make_protocol(task, sigma)


def test_noise_baseline_has_the_psnr_sigma_implies(tmp_path: Path) -> None:
    """Sigma is on the 0..255 scale: a mid-grey image (no clipping) with sigma 25 is at 20*log10(255/25) dB."""
    folder = tmp_path / "grey"
    _png(folder / "grey.png", np.full((128, 128, 3), 128, np.uint8))
    protocol, degradation = make_protocol("denoise", sigma=25)
    result = run_benchmark([find_dataset(str(folder))], protocol, degradation, [Contender("input", "baseline")], None)
    assert result.datasets[0].results[0].psnr("rgb") == pytest.approx(20 * np.log10(255 / 25), abs=0.1)


def test_inputs_are_mod_cropped_seeded_and_gray_stays_gray(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    odd = _png(tmp_path / "odd.png", rng.integers(0, 256, (37, 29, 3), dtype=np.uint8))
    sr, bicubic = make_protocol("sr4")
    gt, lq = make_pair(BenchImage("odd.png", odd), 0, sr, bicubic)
    assert gt.shape == (36, 28, 3) and lq.shape == (9, 7, 3) and gt.dtype == np.uint8
    assert np.array_equal(gt, np.asarray(Image.open(odd))[:36, :28]), "mod-crop keeps the top-left"

    gray = _png(tmp_path / "gray.png", rng.integers(0, 256, (24, 24), dtype=np.uint8))
    noise, add_noise = make_protocol("denoise", sigma=50)
    _, first = make_pair(BenchImage("gray.png", gray), 3, noise, add_noise)
    _, again = make_pair(BenchImage("gray.png", gray), 3, noise, add_noise)
    _, other = make_pair(BenchImage("gray.png", gray), 4, noise, add_noise)
    assert np.array_equal(first, again), "the same image index gets the same noise"
    assert not np.array_equal(first, other), "each image gets its own noise"
    assert np.array_equal(first[..., 0], first[..., 1]) and np.array_equal(first[..., 0], first[..., 2])


def test_scores_crop_the_border_and_measure_both_channels() -> None:
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
    out = gt.copy()
    out[:3, :, :] = 255 - out[:3, :, :]  # damage confined to a 3 px band
    assert score_image("x", out, gt, crop=3).psnr == {"y": float("inf"), "rgb": float("inf")}
    assert np.isfinite(score_image("x", out, gt, crop=2).psnr["y"])
    # A colour shift that keeps the luma: Y barely moves, RGB does.
    shifted = gt.astype(np.float64)
    shifted[..., 0] += 10.0
    shifted[..., 1] -= 10.0 * 65.481 / 128.553
    shifted = np.clip(np.rint(shifted), 0, 255).astype(np.uint8)
    scores = score_image("x", shifted, gt, crop=0)
    assert scores.psnr["y"] > scores.psnr["rgb"] + 10
    assert scores.psnr["rgb"] == pytest.approx(psnr(shifted, gt))
    assert scores.ssim["rgb"] < 1 and scores.ssim["y"] <= 1


# --- registry and discovery -----------------------------------------------------------------


def test_registry_entries_are_complete() -> None:
    assert {"Set5", "Set14", "B100", "Urban100", "Manga109", "CBSD68", "Kodak24", "McMaster", "Set12",
            "BSD68", "Rain100L", "Rain100H", "LOL"} <= set(DATASETS)
    for spec in DATASETS.values():
        assert spec.url.startswith(("https://", "http://")) and spec.count > 0
        assert spec.tasks and set(spec.tasks) <= set(TASKS), spec.name
        if spec.pairs is not None:
            assert len(spec.tasks) == 1, "a pair set's inputs fix its task"
    assert DATASETS["Urban100"].tasks.count("sr4") == 1 and "denoise" in DATASETS["Urban100"].tasks


def test_sets_are_found_in_data_dir_then_env_then_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptir_cli.weights.cache import home

    cached = _random_images(home() / "data" / "Set5", 5)
    assert find_dataset("Set5").folder == cached
    env = _random_images(tmp_path / "env" / "set5", 5)  # names match case-insensitively
    monkeypatch.setenv("ADAPTIR_DATA", str(tmp_path / "env"))
    assert find_dataset("SET5").folder == env
    given = _random_images(tmp_path / "given" / "Set5" / "HR", 5)
    found = find_dataset("Set5", data_dir=tmp_path / "given")
    assert found.folder == tmp_path / "given" / "Set5" and found.images[0].gt.parent == given
    assert found.spec is DATASETS["Set5"] and len(found.images) == 5


def test_missing_or_incomplete_sets_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as missing:
        find_dataset("Set14", data_dir=tmp_path)
    message = str(missing.value)
    assert str(tmp_path / "Set14") in message and DATASETS["Set14"].url in message and "ADAPTIR_DATA" in message

    _random_images(tmp_path / "Set5", 3)
    with pytest.raises(DatasetError, match="holds 3 images but Set5 has 5.*download the missing"):
        find_dataset("Set5", data_dir=tmp_path)
    _random_images(tmp_path / "Set5", 7)
    with pytest.raises(DatasetError, match="holds 7 images.*custom set"):
        find_dataset("Set5", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="neither a known test set"):
        find_dataset(str(tmp_path / "nowhere"))


def test_pairs_are_matched_by_number(tmp_path: Path) -> None:
    folder = tmp_path / "rain"
    rng = np.random.default_rng(2)
    for lq_name, gt_name in [("rain-1.png", "norain-001.png"), ("rain-010.png", "norain-10.png"),
                             ("rain-2.png", "norain-2.png")]:
        pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
        _png(folder / "input" / lq_name, pixels)
        _png(folder / "target" / gt_name, pixels)
    found = find_dataset(str(folder))  # the Rain100 layout is recognised without --pairs
    assert found.paired and found.spec is None
    assert [(i.lq.name, i.gt.name) for i in found.images] == [
        ("rain-1.png", "norain-001.png"), ("rain-2.png", "norain-2.png"), ("rain-010.png", "norain-10.png")]

    _png(folder / "input" / "rain-3.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(DatasetError, match="no partner.*rain-3.png"):
        find_dataset(str(folder))


def test_custom_pair_templates(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for name in ("a", "b"):
        _png(tmp_path / "set" / "noisy" / f"{name}_n.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        _png(tmp_path / "set" / "clean" / f"{name}.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    layout = PairLayout.parse("noisy/{id}_n.png, clean/{id}.png")
    found = find_dataset(str(tmp_path / "set"), pairs=layout)
    assert [(i.lq.name, i.gt.name) for i in found.images] == [("a_n.png", "a.png"), ("b_n.png", "b.png")]
    for bad in ("noisy/{id}.png", "{id}/x.png,clean/{id}.png", "a.png,b/{id}.png"):
        with pytest.raises(DatasetError):
            PairLayout.parse(bad)


# --- real data ------------------------------------------------------------------------------


def test_bicubic_x2_baseline_on_set5(shared: Path) -> None:
    """Our bicubic x2 baseline on Set5 is 33.682 dB (Y); papers print 33.66. Both are right: the
    papers' figure (SRCNN's table: 37.07, 36.81, 27.43, 34.86, 32.14) comes from the older
    Y-only pipeline - round MATLAB's Y to uint8, bicubic down and up on Y alone - while the modern
    protocol (BasicSR, EMT) down-scales the RGB image to a uint8 LR, which is what a model gets,
    and measures the float Y of the RGB result. Reproducing both pins the resize and the metric."""
    protocol, degradation = make_protocol("sr2")
    dataset = find_dataset("Set5", data_dir=shared / "data" / "test")
    result = run_benchmark([dataset], protocol, degradation, [Contender("bicubic", "baseline")], None)
    bicubic = result.datasets[0].results[0]
    assert bicubic.psnr("y") == pytest.approx(33.682, abs=0.001)
    assert bicubic.ssim("y") == pytest.approx(0.9305, abs=0.0005)

    y_only = []
    for image in dataset.images:
        y = modcrop(np.floor(rgb_to_y(to_uint8(read_image(image.gt).rgb)) + 0.5), 2)
        up = imresize(imresize(y / 255.0, scale=0.5), scale=2)
        y_only.append(psnr(to_uint8(up), y.astype(np.uint8), crop_border=2))
    assert np.round(y_only, 2).tolist() == [37.07, 36.81, 27.43, 34.86, 32.14]
    assert float(np.mean(y_only)) == pytest.approx(33.66, abs=0.005)


def test_set14_gray_bridge_is_scored_like_basicsr(shared: Path) -> None:
    """bridge.png is grayscale: the model gets it replicated to RGB and Y is taken on both sides."""
    dataset = find_dataset("Set14", data_dir=shared / "data" / "test")
    bridge = next(i for i in dataset.images if i.name == "bridge.png")
    protocol, degradation = make_protocol("sr2")
    gt, lq = make_pair(bridge, 0, protocol, degradation)
    assert gt.shape == (512, 512, 3) and np.array_equal(gt[..., 0], gt[..., 2])
    up = to_uint8(imresize(lq, scale=2))
    assert score_image("bridge.png", up, gt, 2).psnr["y"] == pytest.approx(27.894, abs=0.001)


# --- the command ----------------------------------------------------------------------------


def test_bench_command_writes_json_and_csv_and_reports_broken_images(tmp_path: Path, tiny_emt_file: Path) -> None:
    folder = _random_images(tmp_path / "mine", 2)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    result = runner.invoke(app, [
        "bench", "--task", "sr2", "--dataset", str(folder), "--base", str(tiny_emt_file), "--baseline",
        "--json", str(out_json), "--csv", str(out_csv), "--save-images", str(tmp_path / "saved"), "-q",
    ])
    assert result.exit_code == 1, result.output
    assert "broken.png" in result.output and "Y PSNR / SSIM" in result.output
    report = json.loads(out_json.read_text())
    assert report["protocol"]["channel"] == "y" and report["protocol"]["crop"] == 2
    assert report["base"]["sha256"] and report["device"] == "cpu" and report["precision"] == "fp32"
    mine = report["datasets"][0]
    assert [f["image"] for f in mine["failures"]] == ["broken.png"]
    assert set(mine["results"]) == {"bicubic", "tiny_emt_x2"}
    model = mine["results"]["tiny_emt_x2"]
    assert model["images_scored"] == 2 and model["seconds_per_image"] > 0 and model["megapixels_per_second"] > 0
    per_image = model["per_image"]
    assert model["psnr"]["y"] == pytest.approx(np.mean([p["psnr"]["y"] for p in per_image]))
    saved = tmp_path / "saved" / "mine" / "tiny_emt_x2" / "img00.png"
    written = np.asarray(Image.open(saved))
    gt = np.asarray(Image.open(folder / "img00.png"))
    assert psnr(written, gt, crop_border=2, test_y_channel=True) == pytest.approx(per_image[0]["psnr"]["y"])

    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 2 * (2 + 1)  # two methods: two images and a mean each
    mean = next(r for r in rows if r["method"] == "bicubic" and r["row"] == "mean")
    assert float(mean["psnr_y"]) == pytest.approx(mine["results"]["bicubic"]["psnr"]["y"])


def test_one_column_per_adapter(tmp_path: Path, tiny_emt_file: Path, tiny_adapter: Path) -> None:
    folder = _random_images(tmp_path / "mine", 1, (36, 36, 3))
    result = runner.invoke(app, [
        "bench", "--task", "sr2", "--dataset", str(folder), "--base", str(tiny_emt_file),
        "--adapter", "", "--adapter", str(tiny_adapter), "--json", "-", "-q",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [m["label"] for m in report["methods"]] == ["tiny_emt_x2", "tuned"]
    assert report["methods"][1]["sha256"] and report["methods"][1]["kind"] == "adapter"
    columns = report["datasets"][0]["results"]
    assert columns["tiny_emt_x2"]["psnr"]["y"] != columns["tuned"]["psnr"]["y"]


def test_force_runs_an_adapter_trained_on_other_weights_and_marks_its_column(tmp_path: Path, tiny_adapter: Path) -> None:
    import torch

    from adaptir_cli.bases.emt import EMT, EMTConfig

    torch.manual_seed(5)  # same shape as tiny_emt_file, other weights: the adapter's recorded sha256 differs
    other = tmp_path / "other_emt_x2.pth"
    torch.save({"params": EMT(EMTConfig(scale=2, dim=12, groups=1, layers=2, attention_layers=1)).state_dict()}, other)
    folder = _random_images(tmp_path / "mine", 1, (36, 36, 3))
    args = ["bench", "--task", "sr2", "--dataset", str(folder), "--base", str(other), "--adapter", str(tiny_adapter), "-q"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "--force" in refused.output
    forced = runner.invoke(app, [*args, "--adapter", "", "--force", "--json", "-"])
    assert forced.exit_code == 0, forced.output
    report = json.loads(forced.stdout)  # only the column that needed --force is marked
    assert [(m["label"], m["forced"]) for m in report["methods"]] == [("tuned", True), ("other_emt_x2", False)]
    assert report["datasets"][0]["results"]["tuned"]["psnr"]["y"] > 0


def test_the_bare_base_column_of_a_hybrid_task_is_its_head_alone(tmp_path: Path) -> None:
    import torch

    from adaptir_cli.bases.emt import EMT, EMTConfig

    base = tmp_path / "tiny_emt_x4.pth"
    torch.save({"params": EMT(EMTConfig(scale=4, dim=12, groups=1, layers=2, attention_layers=1)).state_dict()}, base)
    folder = _random_images(tmp_path / "set", 1, (48, 48, 3))
    args = ["bench", "--task", "lr4-noise30", "--dataset", str(folder), "--base", str(base), "-q"]
    refused = runner.invoke(app, args)  # no adapter given and none shipped for this file: nothing to score
    assert refused.exit_code == 1 and "no adapter was given" in refused.output
    bare = runner.invoke(app, [*args, "--adapter", "", "--json", "-"])
    assert bare.exit_code == 0, bare.output
    report = json.loads(bare.stdout)
    assert [(m["label"], m["kind"]) for m in report["methods"]] == [("tiny_emt_x4", "base")]
    assert report["datasets"][0]["results"]["tiny_emt_x4"]["psnr"]["y"] > 0


def test_speed_mode_times_restore_only(tmp_path: Path, tiny_emt_file: Path) -> None:
    out = tmp_path / "speed.json"
    result = runner.invoke(app, [
        "bench", "--task", "sr2", "--base", str(tiny_emt_file), "--speed", "--size", "40x24",
        "--repeats", "3", "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    timing = json.loads(out.read_text())["results"][0]
    assert timing["input_size"] == [24, 40] and timing["output_size"] == [48, 80]
    assert len(timing["seconds"]) == 3 and timing["median_seconds"] == sorted(timing["seconds"])[1]
    assert timing["megapixels_per_second"] == pytest.approx(48 * 80 / 1e6 / timing["median_seconds"])


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--task", "sr2"], 2, "at least one --dataset"),
        (["--task", "denoise", "--dataset", "Set5", "--baseline"], 2, "needs --sigma"),
        (["--task", "sr2", "--dataset", "Set5", "--adapter", "x.safetensors", "--baseline-only"], 2, "loads no base"),
        (["--task", "sr2", "--speed", "--baseline-only"], 2, "drop --dataset, --baseline"),
        (["--task", "sr2", "--dataset", "Set5", "--baseline"], 1, "Download it from"),
        (["--task", "sr2", "--dataset", "Set5", "--baseline", "--precision", "fp8"], 2, "--precision"),
        (["--task", "sr2", "--dataset", "Set5", "--baseline", "--device", "banana"], 2, "--device"),
        (["--task", "sr2", "--dataset", "Set5", "--baseline", "--max-megapixels", "-1"], 2, "--max-megapixels"),
        (["--task", "sr2", "--dataset", "Set5", "--baseline", "--overlap", "-1"], 2, "--overlap"),
    ],
)
def test_bench_command_errors(args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, ["bench", *args])
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())


def test_bench_refuses_images_over_the_size_limit_before_decoding(tmp_path: Path) -> None:
    folder = _random_images(tmp_path / "set", 2)
    args = ["bench", "--task", "sr2", "--dataset", str(folder), "--baseline", "-q", "--json", "-"]
    limited = runner.invoke(app, [*args, "--max-megapixels", "0.001"])
    assert limited.exit_code == 1 and limited.stderr.count("--max-megapixels 1") == 2, limited.output
    assert runner.invoke(app, args).exit_code == 0


def test_pair_sets_refuse_other_tasks(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    for i in range(1, 101):
        pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        _png(tmp_path / "Rain100L" / "input" / f"rain-{i:03d}.png", pixels)
        _png(tmp_path / "Rain100L" / "target" / f"norain-{i:03d}.png", pixels)
    result = runner.invoke(app, ["bench", "--task", "sr2", "--dataset", "Rain100L", "--data", str(tmp_path), "--baseline"])
    assert result.exit_code == 1 and "--task derain" in result.output
    ok = runner.invoke(app, ["bench", "--task", "derain", "--dataset", "Rain100L", "--data", str(tmp_path),
                             "--baseline-only", "--json", "-", "-q"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["datasets"][0]["results"]["input"]["psnr"]["y"] == "inf"


@pytest.mark.slow
@pytest.mark.parametrize(("scale", "expected"), [(2, 38.3056), (4, 32.642)])
def test_emt_reproduces_its_published_set5_psnr(tmp_path: Path, shared: Path, scale: int, expected: float) -> None:
    """The acceptance check: EMT's authors measure 38.3056 (x2) and 32.6420 (x4) dB Y on Set5."""
    out = tmp_path / "set5.json"
    result = runner.invoke(app, [
        "bench", "--task", f"sr{scale}", "--dataset", "Set5", "--data", str(shared / "data" / "test"),
        "--base", str(shared / "weights" / f"EMT_LSR_x{scale}.pth"), "--json", str(out), "-q",
    ])
    assert result.exit_code == 0, result.output
    assert f"{expected:.2f} / " in result.output
    scored = json.loads(out.read_text())["datasets"][0]["results"][f"EMT_LSR_x{scale}"]
    assert scored["images_scored"] == 5
    assert scored["psnr"]["y"] == pytest.approx(expected, abs=0.001)
