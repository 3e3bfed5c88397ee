"""`--task auto`: the shipped classifier, how it reads an image, and how restore uses its choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from adaptir_cli import api, auto_task
from adaptir_cli.auto_task import (
    CROP,
    LABELS,
    TASK_OF_LABEL,
    AutoTaskError,
    TaskClassifier,
    choose_tasks,
    classify,
    crop_corners,
    read_classifier,
    save_classifier,
    shipped_classifier,
    synthesise,
)
from adaptir_cli.bases.loading import sha256_file
from adaptir_cli.cli import completion
from adaptir_cli.cli.app import app
from adaptir_cli.data.degradations import get_degradation
from adaptir_cli.distributed import Distributed
from adaptir_cli.file_jobs import STDIO, Job, JobPlanError
from adaptir_cli.imaging.reading import read_image
from adaptir_cli.metrics import to_uint8
from adaptir_cli.tasks import TASKS
from adaptir_cli.weights.manifest import default_manifest, load_manifest

runner = CliRunner()


def _always(label: str) -> TaskClassifier:
    """A classifier that answers `label` for every image, to test what is done with an answer."""
    model = TaskClassifier()
    with torch.no_grad():
        model.classify.weight.zero_()
        model.classify.bias.copy_(torch.tensor([8.0 if name == label else 0.0 for name in LABELS]))
    return model.eval()


def _png(path: Path, shape: tuple[int, int, int] = (24, 24, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def test_crops_lie_on_a_fixed_grid_inside_the_image() -> None:
    corners = crop_corners(321, 481)
    assert corners == crop_corners(321, 481) and len(corners) == 16
    # Spread from edge to edge, on JPEG's 8-pixel block grid.
    assert {top for top, _ in corners} == {0, 80, 168, 256} and {left for _, left in corners} == {0, 136, 272, 416}
    assert all(top + CROP <= 321 and left + CROP <= 481 for top, left in corners)
    assert crop_corners(40, 100) == [(0, 0), (0, 8), (0, 24), (0, 32)]  # too short for more than one row


def test_classifier_file_round_trip_and_what_it_refuses(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = TaskClassifier().eval()
    path = save_classifier(tmp_path / "c.safetensors", model, {"steps": 1})
    images = torch.rand(2, 3, 40, 50)
    assert torch.equal(read_classifier(path)(images), model(images))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(AutoTaskError, match="not an adaptir task classifier"):
        read_classifier(tmp_path / "other.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a file format at all")
    with pytest.raises(AutoTaskError, match="cannot read"):
        read_classifier(tmp_path / "garbage.safetensors")


def test_shipped_classifier_is_its_manifest_entry_and_maps_to_shipped_tasks() -> None:
    entry = default_manifest().classifiers["auto-task"]
    assert entry.path.stat().st_size == entry.size and sha256_file(entry.path) == entry.sha256
    model = shipped_classifier()
    assert model.labels == LABELS and sum(p.numel() for p in model.parameters()) < 50_000
    for label in LABELS:  # every answer runs a task that has a default base offline
        assert TASK_OF_LABEL[label] in TASKS and default_manifest().default_base_for(TASK_OF_LABEL[label])


def test_manifest_classifiers_are_checked_like_other_bundled_files(tmp_path: Path) -> None:
    entry = '[classifiers.c]\nsource = "bundled"\npath = "c.safetensors"\nsize = 10\nsha256 = "{}"\nlicense = "MIT"\ndescription = "d"\n'
    path = tmp_path / "manifest.toml"
    path.write_text(entry.format("0" * 64), encoding="utf-8")
    assert load_manifest(path, bundled_dir=tmp_path).classifiers["c"].path == tmp_path / "c.safetensors"
    path.write_text(entry.format("not hex"), encoding="utf-8")
    with pytest.raises(ValueError, match="sha256"):
        load_manifest(path, bundled_dir=tmp_path)


def test_synthesised_inputs_are_8_bit_images_of_each_class() -> None:
    clean = np.random.default_rng(0).random((96, 128, 3), dtype=np.float32)
    for label in LABELS:
        first = synthesise(clean, label, np.random.default_rng(5))
        assert np.array_equal(first, synthesise(clean, label, np.random.default_rng(5))), label  # seeded
        assert np.array_equal(to_uint8(first) / np.float32(255), first), label  # as read from a file
        expected = {"lr4-noise30": [(24, 32)], "lr4-jpeg30": [(24, 32)], "clean": [(96, 128), (48, 64), (24, 32)]}
        assert first.shape[:2] in expected.get(label, [(96, 128)]), label


def test_choose_tasks_replaces_only_auto_and_reports_unreadable_images(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    jobs = [
        Job(_png(tmp_path / "a.png"), tmp_path / "out" / "a.png", "auto"),
        Job(_png(tmp_path / "b.png"), tmp_path / "out" / "b.png", "derain"),
        Job(broken, tmp_path / "out" / "broken.png", "auto"),
    ]
    planned, choices, unreadable = choose_tasks(jobs, model=_always("lowlight"))
    assert [job.task for job in planned] == ["lowlight", "derain"]  # an explicit task is never replaced
    assert list(choices) == [jobs[0].output] and choices[jobs[0].output].confidence > 0.99
    assert [(r.job.source, r.status) for r in unreadable] == [(broken, "failed")] and "broken.png" in unreadable[0].error
    with pytest.raises(JobPlanError, match="standard input"):
        choose_tasks([Job(STDIO, STDIO, "auto")], model=_always("clean"))
    with pytest.raises(JobPlanError, match="drop --adapter"):
        choose_tasks([Job(jobs[0].source, jobs[0].output, "auto", tmp_path / "x.safetensors")], model=_always("clean"))


def test_choose_tasks_reads_only_this_process_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = [Job(_png(tmp_path / f"{i}.png"), tmp_path / "out" / f"{i}.png", "auto") for i in range(5)]
    read: list[str] = []

    def counting_read(path: Path, **options: object):
        read.append(path.name)
        return read_image(path, **options)

    monkeypatch.setattr(auto_task, "read_image", counting_read)
    monkeypatch.setattr(auto_task, "gather", lambda value, context: [value])  # this process's part only
    second = Distributed(1, 2, 1, torch.device("cpu"))
    planned, choices, _ = choose_tasks(jobs, model=_always("derain"), context=second)
    assert read == ["1.png", "3.png"]  # every second image from its rank on; torchrun gathers the rest
    assert [job.source.name for job in planned] == ["1.png", "3.png"] and set(choices) == {jobs[1].output, jobs[3].output}


def test_restore_task_auto_prints_the_choice_and_puts_it_in_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auto_task, "shipped_classifier", lambda: _always("lowlight"))
    (tmp_path / "c.png").write_bytes(b"\x89PNG cut off")
    inputs = [_png(tmp_path / "a.png"), _png(tmp_path / "b.png"), tmp_path / "c.png"]
    result = runner.invoke(app, [
        "restore", *map(str, inputs), str(tmp_path / "out"), "--task", "auto", "--task", "derain", "--task", "auto",
        "--json", "--tile", "0",
    ])
    assert result.exit_code == 1, result.output  # c.png cannot be read; the others are restored
    assert "auto: a.png -> lowlight (low light, 100%)" in result.stderr
    images = {Path(image["input"]).name: image for image in json.loads(result.stdout)["images"]}
    assert (images["a.png"]["task"], images["a.png"]["status"], images["a.png"]["auto"]["class"]) == ("lowlight", "ok", "lowlight")
    assert images["a.png"]["adapter"].endswith("compactir-x1-lowlight.safetensors")
    assert (images["b.png"]["task"], "auto" in images["b.png"]) == ("derain", False)
    assert (images["c.png"]["task"], images["c.png"]["status"]) == ("auto", "failed")


def test_restore_task_auto_refuses_standard_input(tmp_path: Path) -> None:
    result = runner.invoke(app, ["restore", "-", str(tmp_path / "r.png"), "--task", "auto"], input=b"png bytes")
    assert result.exit_code == 2 and "save the image to a file first" in result.stderr


def test_library_auto_is_the_task_the_classifier_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auto_task, "shipped_classifier", lambda: _always("derain"))
    rgb = np.random.default_rng(1).random((20, 20, 3), dtype=np.float32)
    assert api.choose_task(rgb).task == "derain"
    restorers = api.Restorers(device="cpu")
    auto = api.restore_array(rgb, "auto", tile=0, restorers=restorers)
    assert np.array_equal(auto, api.restore_array(rgb, "derain", tile=0, restorers=restorers))


def test_restore_completes_auto_and_other_commands_do_not() -> None:
    assert completion.restore_tasks("a") == ["auto"] and completion.tasks("a") == []


def test_shipped_classifier_recognises_real_and_synthetic_degradations(shared: Path) -> None:
    """A few images of each test set (never trained on); evaluate.py measures all of them."""
    test = shared / "data" / "test"
    cbsd = [read_image(path).rgb for path in sorted((test / "CBSD68").iterdir())[:6]]
    rng = np.random.default_rng(0)
    cases = {
        ("clean",): cbsd,
        ("denoise",): [get_degradation("denoise50")(image, rng) for image in cbsd],
        ("lowlight",): [get_degradation("lowlight")(image, rng) for image in cbsd],
        ("derain-heavy",): [get_degradation("derain-heavy")(image, rng) for image in cbsd],
    }
    for expected, images in cases.items():
        chosen = [classify(to_uint8(image) / np.float32(255)).label for image in images]
        assert sum(label in expected for label in chosen) >= 5, (expected, chosen)
    # Real rain is harder than synthetic (docs/auto-task.md): most of it must still be seen as rain.
    rain = [classify(read_image(path).rgb).label for path in sorted((test / "Rain100L" / "input").iterdir())[:20]]
    assert sum(label in ("derain", "derain-heavy") for label in rain) >= 12, rain
