"""`adaptir experiment`: config loading and validation, a whole run on a tiny base, reuse, the report.

Everything runs on the tiny EMT x2 of conftest.py and a few generated images (2-step trainings);
nothing here needs ../shared: ${ADAPTIR_SHARED} is pointed at a temporary folder.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from adaptir_cli.bases import load_base_file
from adaptir_cli.cli.app import app
from adaptir_cli.experiments import ExperimentError, load_experiment
from adaptir_cli.experiments.plot import plot_svg
from adaptir_cli.experiments.report import report_markdown
from adaptir_cli.experiments.results import RESULTS_FORMAT, ResultsError, experiment_results
from adaptir_cli.restorer import RestoreError, Restorer
from adaptir_cli.training.finetune import train_whole_base

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")

EXPERIMENT = """
name = "tiny-sr2"
description = "PETL methods on a tiny random EMT x2"
base = "${ADAPTIR_SHARED}/tiny_emt_x2.pth"
task = "sr2"

[data]
gt = "../gt"

[train]
steps = 2
batch = 2
patch = 20
lr = 1e-3
warmup = 0
seed = 0
val_every = 0
checkpoint_every = 0
workers = 0

[bench]
datasets = ["../bench_set"]
seed = 0
"""

RUNS = {
    "00-none.toml": 'label = "No tuning"\nmethod = "none"\n',
    "10-adaptir.toml": 'label = "AdaptIR h8"\nmethod = "adaptir"\n\n[config]\nhidden = 8\n',
    "20-full.toml": 'label = "Full fine-tuning"\nmethod = "full"\n\n[train]\nlr = 1e-4\n',
}


def _smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    coarse = rng.uniform(0, 255, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 8, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _images(folder: Path, count: int, size: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        Image.fromarray(_smooth_image(rng, size, size)).save(folder / f"img{index}.png")
    return folder


def _experiment(root: Path, runs: dict[str, str] = RUNS, text: str = EXPERIMENT) -> Path:
    folder = root / "exp"
    (folder / "runs").mkdir(parents=True)
    (folder / "experiment.toml").write_text(text)
    for name, body in runs.items():
        (folder / "runs" / name).write_text(body)
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_emt_file: Path) -> Path:
    """gt/ (training images), bench_set/ (a custom test set), shared/ (the base) and exp/."""
    root = tmp_path_factory.mktemp("experiment")
    _images(root / "gt", 4, 48, seed=0)
    _images(root / "bench_set", 2, 32, seed=1)
    (root / "shared").mkdir()
    shutil.copy(tiny_emt_file, root / "shared" / "tiny_emt_x2.pth")
    _experiment(root)
    return root


@pytest.fixture(scope="module")
def ran(workspace: Path) -> Path:
    """The experiment after one `adaptir experiment run` (module-wide: the tests below read it)."""
    result = runner.invoke(app, ["experiment", "run", str(workspace / "exp"), "--shared", str(workspace / "shared"),
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    return workspace / "exp"


def _results(folder: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted((folder / "results").glob("*.json"))}


# --- config ----------------------------------------------------------------------------------


def test_config_expands_shared_resolves_paths_and_merges_train(workspace: Path) -> None:
    experiment = load_experiment(workspace / "exp", shared=workspace / "shared")
    assert [run.name for run in experiment.runs] == ["00-none", "10-adaptir", "20-full"]
    assert experiment.base_source() == (workspace / "shared" / "tiny_emt_x2.pth").resolve()
    assert experiment.data_options().gt == workspace / "exp" / ".." / "gt"
    assert experiment.datasets() == [str(workspace / "exp" / ".." / "bench_set")]
    none, adaptir, full = experiment.runs
    assert adaptir.config.hidden == 8 and none.config is None and not none.trains and full.trains
    assert experiment.loop_settings(adaptir).lr == 1e-3 and experiment.loop_settings(full).lr == 1e-4
    assert experiment.loop_settings(full).steps == 2 and experiment.loop_settings(full).schedule.warmup == 0
    merged = experiment.merged(full)
    assert merged["train"]["lr"] == 1e-4 and merged["base"] == "${ADAPTIR_SHARED}/tiny_emt_x2.pth"
    assert [run.name for run in experiment.select(["AdaptIR h8", "20-full"])] == ["10-adaptir", "20-full"]
    with pytest.raises(ExperimentError, match="no run is named 'nope'"):
        experiment.select(["nope"])


def test_a_manifest_name_stays_a_name(tmp_path: Path) -> None:
    folder = _experiment(tmp_path, text=EXPERIMENT.replace("${ADAPTIR_SHARED}/tiny_emt_x2.pth", "emt-x2"))
    assert load_experiment(folder, shared=tmp_path).base_source() == "emt-x2"


def test_every_problem_is_reported_at_once_with_its_file(tmp_path: Path) -> None:
    text = EXPERIMENT.replace('task = "sr2"', 'task = "sr2"\ncolour = "blue"').replace("steps = 2", "stepz = 2")
    text = text.replace("batch = 2", 'batch = "two"')
    runs = {
        "a.toml": 'label = "A"\nmethod = "adaptir"\n\n[config]\nwidth = 3\n',
        "b.toml": 'label = "A"\nmethod = "prefix-tuning"\n',
        "c.toml": 'label = "C"\nmethod = "none"\n\n[config]\nhidden = 8\n',
        "d.toml": 'label = "D"\nmethod = "full"\n\n[train]\nlr = "fast"\n',
        "e.toml": 'method = "adaptir"\n',
    }
    folder = _experiment(tmp_path, runs, text)
    with pytest.raises(ExperimentError) as error:
        load_experiment(folder, shared=tmp_path)
    message = str(error.value)
    top = str(folder / "experiment.toml")
    for expected in (
        f"{top}: unknown key 'colour'", f"{top}: [train] unknown key 'stepz'", f"{top}: [train] batch must be an integer",
        "a.toml: [config] invalid adaptir config", "b.toml: unknown adapter method 'prefix-tuning'",
        "c.toml: method 'none' takes no [config]", "d.toml: [train] lr must be a number", "e.toml: label is missing",
    ):
        assert expected in message, (expected, message)


def test_labels_name_one_run_each_and_only_names_a_known_run(tmp_path: Path) -> None:
    runs = {"a.toml": 'label = "Same"\nmethod = "none"\n', "b.toml": 'label = "Same"\nmethod = "adaptir"\n'}
    folder = _experiment(tmp_path, runs)
    with pytest.raises(ExperimentError, match="b.toml: label 'Same' is also the label of a.toml"):
        load_experiment(folder, shared=tmp_path)
    (folder / "runs" / "b.toml").write_text('label = "Other"\nmethod = "adaptir"\n')
    result = runner.invoke(app, ["experiment", "run", str(folder), "--shared", str(tmp_path), "--only", "c"])
    assert result.exit_code == 2 and "no run is named 'c'; runs: a (Same), b (Other)" in result.output


def test_settings_the_loop_refuses_are_reported_with_the_run_file(tmp_path: Path) -> None:
    runs = {"a.toml": 'label = "A"\nmethod = "adaptir"\n\n[train]\nwarmup = 5\n'}  # warm-up longer than 2 steps
    with pytest.raises(ExperimentError, match=r"a\.toml: \[train\] --warmup must be in \[0, steps\)"):
        load_experiment(_experiment(tmp_path, runs), shared=tmp_path)


def test_an_unset_shared_folder_says_how_to_set_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADAPTIR_SHARED", raising=False)
    folder = _experiment(tmp_path, {"a.toml": 'label = "A"\nmethod = "none"\n'})
    with pytest.raises(ExperimentError) as error:
        load_experiment(folder)
    assert "uses ${ADAPTIR_SHARED}, which is not set" in str(error.value) and "--shared" in str(error.value)
    monkeypatch.setenv("ADAPTIR_SHARED", str(tmp_path / "elsewhere"))
    assert load_experiment(folder).base_source() == tmp_path / "elsewhere" / "tiny_emt_x2.pth"
    result = runner.invoke(app, ["experiment", "run", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "experiment.toml not found" in result.output


# --- a whole run -----------------------------------------------------------------------------


def test_run_trains_benches_and_records_every_run(ran: Path, workspace: Path) -> None:
    results = _results(ran)
    assert list(results) == ["00-none", "10-adaptir", "20-full"]
    none, adaptir, full = results.values()
    base_parameters = sum(p.numel() for p in load_base_file(workspace / "shared" / "tiny_emt_x2.pth").module.parameters())
    for payload in results.values():
        assert payload["format"] == RESULTS_FORMAT and payload["experiment"] == "tiny-sr2"
        assert payload["base"]["parameters"] == base_parameters
        assert set(payload["versions"]) == {"adaptir", "torch", "python"} and payload["device"] == "cpu"
        [dataset] = payload["datasets"]
        assert dataset["name"] == "bench_set" and dataset["images_scored"] == 2 and dataset["channel"] == "y"
        assert isinstance(dataset["psnr"]["y"], float) and isinstance(dataset["ssim"]["rgb"], float)
    assert none["trainable_parameters"] == 0 and none["training"] is None and none["file_bytes"] is None
    assert 0 < adaptir["trainable_parameters"] < base_parameters
    assert adaptir["method_config"]["hidden"] == 8 and adaptir["config"]["train"]["lr"] == 1e-3
    assert full["trainable_parameters"] == base_parameters and full["config"]["train"]["lr"] == 1e-4
    for payload in (adaptir, full):
        training = payload["training"]
        assert training["steps"] == 2 and training["seconds"] > 0 and training["steps_per_second"] > 0
        assert training["final_loss"] > 0 and not training["reused"]
        output = ran / payload["output"]
        assert payload["file_bytes"] == output.stat().st_size > 0
    # The full run's output is a base the loaders accept, with changed weights.
    tuned = load_base_file(ran / full["output"])
    original = load_base_file(workspace / "shared" / "tiny_emt_x2.pth")
    assert tuned.sha256 != original.sha256
    assert any(not torch.equal(a, b) for a, b in zip(tuned.module.state_dict().values(), original.module.state_dict().values()))


def test_run_scores_equal_adaptir_bench(ran: Path, workspace: Path, tmp_path: Path) -> None:
    results = _results(ran)
    out = tmp_path / "bench.json"
    command = ["bench", "--task", "sr2", "--dataset", str(workspace / "bench_set"), "--device", "cpu", "-q",
               "--base", str(workspace / "shared" / "tiny_emt_x2.pth"), "--adapter", "",
               "--adapter", str(ran / "outputs" / "10-adaptir.safetensors"), "--json", str(out)]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    bench = json.loads(out.read_text())["datasets"][0]["results"]
    assert results["00-none"]["datasets"][0]["psnr"] == bench["tiny_emt_x2"]["psnr"]
    assert results["00-none"]["datasets"][0]["ssim"] == bench["tiny_emt_x2"]["ssim"]
    assert results["10-adaptir"]["datasets"][0]["psnr"] == bench["10-adaptir"]["psnr"]
    out_full = tmp_path / "full.json"
    result = runner.invoke(app, ["bench", "--task", "sr2", "--dataset", str(workspace / "bench_set"), "--device", "cpu",
                                 "-q", "--base", str(ran / "outputs" / "20-full.safetensors"), "--json", str(out_full)])
    assert result.exit_code == 0, result.output
    [full_bench] = json.loads(out_full.read_text())["datasets"][0]["results"].values()
    assert results["20-full"]["datasets"][0]["psnr"] == full_bench["psnr"]


def test_rerun_reuses_trained_outputs_and_force_retrains(ran: Path, workspace: Path) -> None:
    before = _results(ran)
    adapter = ran / "outputs" / "10-adaptir.safetensors"
    stamp = adapter.stat().st_mtime_ns
    args = ["experiment", "run", str(ran), "--shared", str(workspace / "shared"), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "reusing" in result.output and adapter.stat().st_mtime_ns == stamp
    after = _results(ran)
    for name in ("10-adaptir", "20-full"):
        assert after[name]["training"]["reused"] and after[name]["training"]["seconds"] == before[name]["training"]["seconds"]
        assert after[name]["datasets"] == before[name]["datasets"]
    result = runner.invoke(app, [*args, "--quiet", "--force", "--only", "AdaptIR h8"])
    assert result.exit_code == 0, result.output
    assert adapter.stat().st_mtime_ns != stamp and not _results(ran)["10-adaptir"]["training"]["reused"]
    # Same seed, same data, same settings: the retrained adapter scores the same.
    assert _results(ran)["10-adaptir"]["datasets"] == before["10-adaptir"]["datasets"]


def test_an_output_trained_with_other_settings_is_not_reused(ran: Path, workspace: Path, tmp_path: Path) -> None:
    copy = tmp_path / "exp"
    shutil.copytree(ran, copy)
    (copy / "runs" / "10-adaptir.toml").write_text(RUNS["10-adaptir.toml"] + "\n[train]\nsteps = 3\n")
    (copy / "experiment.toml").write_text(EXPERIMENT.replace('"../', f'"{workspace}/'))
    result = runner.invoke(app, ["experiment", "run", str(copy), "--shared", str(workspace / "shared"), "--device",
                                 "cpu", "--quiet", "--only", "10-adaptir"])
    assert result.exit_code == 1
    assert "was trained with other settings" in result.output and "steps: 2 in the file, 3 now" in result.output
    assert "--force --only 10-adaptir" in result.output


def test_the_bare_base_runs_tasks_that_need_an_adapter() -> None:
    from adaptir_cli.bases import build_base
    from adaptir_cli.bases.emt import EMT, EMTConfig
    state = EMT(EMTConfig(scale=4, dim=12, groups=1, layers=2, attention_layers=1)).state_dict()
    base = build_base(state, name="tiny-x4", sha256="0" * 64, source="test")
    with pytest.raises(RestoreError, match="no adapter was given"):
        Restorer(base, device="cpu").use("lr4-noise30")
    restorer = Restorer(base, device="cpu")
    restorer.use("lr4-noise30", bare=True)
    assert restorer.task.name == "lr4-noise30" and restorer.head == "sr4" and restorer.adapter is None


def test_full_finetuning_keeps_batchnorm_statistics_fixed() -> None:
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.1))
    module.eval()
    train_whole_base(module)
    assert module[0].training and module[2].training and not module[1].training


# --- report ----------------------------------------------------------------------------------


def test_report_has_a_row_per_run_the_budget_and_a_plot(ran: Path, tmp_path: Path) -> None:
    out, plot = tmp_path / "docs" / "results.md", tmp_path / "docs" / "results.svg"
    result = runner.invoke(app, ["experiment", "report", str(ran), "--out", str(out), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    markdown = out.read_text()
    results = _results(ran)
    parameters = results["00-none"]["base"]["parameters"]
    assert "## tiny-sr2" in markdown and "bench_set PSNR / SSIM" in markdown
    # The base is named with its weights' sha256: a shipped name can later mean other weights.
    assert f"{parameters:,} parameters, sha256 {results['00-none']['base']['sha256'][:12]}), task" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| run ")]
    assert [row.split(" | ")[0] for row in rows] == ["| No tuning", "| AdaptIR h8", "| Full fine-tuning"]
    assert rows[0].split(" | ")[2] == "0 (0 %)" and rows[2].split(" | ")[2] == f"{parameters:,} (100 %)"
    adaptir = results["10-adaptir"]
    assert f"{adaptir['trainable_parameters']:,} (" in rows[1]
    assert f"{adaptir['datasets'][0]['psnr']['y']:.2f} / {adaptir['datasets'][0]['ssim']['y']:.4f}" in rows[1]
    assert "Budget: 2 steps, batch 2, patch 20, lr 0.001 (lr 0.0001 for Full fine-tuning), cosine schedule" in markdown
    assert "seed 0; trained on cpu, benchmarked on cpu; results of" in markdown
    assert "![PSNR on the first test set against trainable parameters](results.svg)" in markdown
    svg = ET.parse(plot).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.tag == f"{ns}svg"
    assert len(svg.findall(f".//{ns}circle[{ns}title]")) == 2  # adaptir and full; "none" is the dashed line
    assert [line for line in svg.iter(f"{ns}line") if line.get("stroke-dasharray")]
    assert {"AdaptIR h8", "Full fine-tuning"} <= {text.text for text in svg.iter(f"{ns}text")}
    printed = runner.invoke(app, ["experiment", "report", str(ran)])
    assert printed.exit_code == 0 and printed.output == markdown.replace(
        "\n![PSNR on the first test set against trainable parameters](results.svg)\n", "")

    # Regenerating keeps the analysis written around the generated part, and only that.
    out.write_text("# Results\n\nWhich method to pick.\n\n" + markdown.replace("| No tuning", "| stale") + "\nMore.\n")
    again = runner.invoke(app, ["experiment", "report", str(ran), "--out", str(out), "--plot", str(plot)])
    assert again.exit_code == 0, again.output
    assert out.read_text() == "# Results\n\nWhich method to pick.\n\n" + markdown + "\nMore.\n"


def test_report_without_results_says_to_run_first(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="adaptir experiment run"):
        experiment_results(tmp_path)
    result = runner.invoke(app, ["experiment", "report", str(tmp_path), "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 2 and "SVG" in result.output


def test_plot_handles_a_single_point_and_escapes_labels() -> None:
    run = {
        "experiment": "x<y", "label": "A & B", "method": "lora", "trainable_parameters": 1234,
        "datasets": [{"name": "Set5", "channel": "y", "psnr": {"y": 30.0, "rgb": 28.0}, "ssim": {"y": 0.9, "rgb": 0.8}}],
    }
    root = ET.fromstring(plot_svg([[run]]))
    assert "A & B" in {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert "x<y" in report_markdown([[{**run, "description": "", "task": "sr2", "file_bytes": 10, "training": None,
                                       "created": "2025-01-01T00:00:00+00:00",
                                       "base": {"name": "b", "architecture": "emt", "parameters": 100000},
                                       "bench": {"device": "cpu", "protocol": {"crop": 2, "degradation": "bicubic"}}}]])
