"""`adaptir compare` and the side-by-side pictures behind it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from adaptir_cli.cli.app import app
from adaptir_cli.imaging.compare import CompareError, Panel, compare, enlarge
from adaptir_cli.metrics import psnr

runner = CliRunner()
rng = np.random.default_rng(3)


def _pixels(height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_panels_side_by_side_at_the_output_size_with_psnr_against_the_reference() -> None:
    small, output, truth = _pixels(6, 5), _pixels(12, 10), _pixels(12, 10)
    result = compare([Panel("input", small), Panel("ours", output)], Panel("reference", truth))
    strip = result.picture.shape[0] - 12
    assert result.picture.shape[1] == 3 * 10 + 2 * 8 and strip > 0
    # Each panel sits below its caption strip, the input enlarged with nearest-neighbour.
    assert np.array_equal(result.picture[strip:, :10], small.repeat(2, axis=0).repeat(2, axis=1))
    assert np.array_equal(result.picture[strip:, 18:28], output)
    assert np.array_equal(result.picture[strip:, 36:], truth)
    assert result.psnr == {"input": psnr(enlarge(small, (12, 10)), truth), "ours": psnr(output, truth)}


def test_crop_and_zoom_show_a_detail_but_psnr_is_of_the_whole_image() -> None:
    output, truth = _pixels(16, 16), _pixels(16, 16)
    whole = compare([Panel("ours", output)], Panel("reference", truth))
    detail = compare([Panel("ours", output)], Panel("reference", truth), crop=(4, 2, 5, 3), zoom=2)
    strip = detail.picture.shape[0] - 6
    assert detail.picture.shape[1] == 2 * 10 + 8
    assert np.array_equal(detail.picture[strip:, :10], output[2:5, 4:9].repeat(2, axis=0).repeat(2, axis=1))
    assert detail.psnr == whole.psnr


@pytest.mark.parametrize(("shapes", "crop"), [([(6, 5), (13, 10)], None), ([(8, 8)], (5, 5, 4, 4))])
def test_sizes_that_do_not_correspond_are_refused(shapes: list[tuple[int, int]], crop) -> None:
    with pytest.raises(CompareError):
        compare([Panel(str(i), _pixels(*shape)) for i, shape in enumerate(shapes)], crop=crop)


def test_compare_command_writes_the_picture_and_prints_psnr(tmp_path: Path) -> None:
    paths = {}
    for name, pixels in {"lr": _pixels(8, 8), "a/x": _pixels(16, 16), "b/x": _pixels(16, 16), "hr": _pixels(16, 16)}.items():
        paths[name] = tmp_path / f"{name}.png"
        paths[name].parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(paths[name])
    out = tmp_path / "cmp.png"
    result = runner.invoke(app, [
        "compare", str(paths["lr"]), str(paths["a/x"]), str(paths["b/x"]), "-r", str(paths["hr"]), "-o", str(out), "--json",
    ])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)["psnr_rgb"]
    assert set(scores) == {"input", "a", "b"}  # same file names: the folders tell the outputs apart
    assert scores["a"] == pytest.approx(psnr(np.asarray(Image.open(paths["a/x"])), np.asarray(Image.open(paths["hr"]))))
    assert Image.open(out).size[0] == 4 * 16 + 3 * 8
    bad_labels = runner.invoke(app, ["compare", str(paths["lr"]), str(paths["a/x"]), "-o", str(out), "-l", "one"])
    assert bad_labels.exit_code == 2 and "one --label per image" in bad_labels.output
    outside = runner.invoke(app, ["compare", str(paths["lr"]), str(paths["a/x"]), "-o", str(out), "--crop", "10,10,8,8"])
    assert outside.exit_code == 1 and "not inside" in outside.output
