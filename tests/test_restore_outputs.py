"""Where outputs go and when they are written: never outside OUTPUT_DIR, never over another run's
file without --overwrite, an incomplete one redone, an unwritable folder refused before any work."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from typer.testing import CliRunner

from adaptir_cli.bases import load_base_file
from adaptir_cli.cli.app import app
from adaptir_cli.file_jobs import JobPlanError, plan_jobs, run_jobs
from adaptir_cli.restorer import Restorer, TileSettings

runner = CliRunner()


def _inputs(folder: Path, names: tuple[str, ...] = ("a.png", "b.png")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        Image.fromarray(np.full((20, 20, 3), 40 * index, np.uint8)).save(folder / name)
    return folder


def _restore(inputs: Path, out: Path, base: Path, *extra: str):
    return runner.invoke(app, ["restore", str(inputs), str(out), "--task", "sr2", "--base", str(base), "-q", "--json", *extra])


def _png(marker: bytes) -> bytes:
    """A valid PNG that carries `marker` in a text chunk, so files can be told apart."""
    info = PngInfo()
    info.add_text("by", marker.decode())
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def test_outputs_written_meanwhile_by_another_run_are_neither_redone_nor_replaced(tmp_path: Path, tiny_emt_file: Path) -> None:
    out = tmp_path / "out"
    jobs = plan_jobs([_inputs(tmp_path / "in", ("a.png", "b.png", "c.png"))], out, ["sr2"])
    restorer = Restorer(load_base_file(tiny_emt_file), device="cpu")
    theirs = b"written by the other run"
    started = []

    def other_run(job) -> None:
        # While this run works on a.png, another one finishes a.png (during the restore) and b.png.
        started.append(job.output.name)
        if job.output.name == "a.png":
            (out / "b.png").parent.mkdir(parents=True, exist_ok=True)
            (out / "b.png").write_bytes(_png(theirs))
            (out / "a.png").write_bytes(_png(theirs))

    results = {r.job.output.name: r for r in run_jobs(restorer, jobs, TileSettings(tile=0), on_image=other_run)}
    assert started == ["a.png", "c.png"], "b.png appeared before its turn: not restored again"
    assert results["a.png"].status == "skipped" and "meanwhile" in results["a.png"].error
    assert results["b.png"].status == "skipped" and results["c.png"].status == "ok"
    assert (out / "a.png").read_bytes() == (out / "b.png").read_bytes() == _png(theirs)
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"], "no temporary file is left"


def test_empty_and_truncated_outputs_are_redone_without_overwrite(tmp_path: Path, tiny_emt_file: Path) -> None:
    inputs = _inputs(tmp_path / "in", ("empty.png", "cut.png", "whole.png"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "empty.png").write_bytes(b"")
    (out / "cut.png").write_bytes(_png(b"x")[:-30])
    (out / "whole.png").write_bytes(_png(b"kept"))
    result = _restore(inputs, out, tiny_emt_file)
    assert result.exit_code == 0, result.output
    statuses = {Path(r["output"]).name: r["status"] for r in json.loads(result.stdout)["images"]}
    assert statuses == {"empty.png": "ok", "cut.png": "ok", "whole.png": "skipped"}
    assert Image.open(out / "cut.png").size == (40, 40) and (out / "whole.png").read_bytes() == _png(b"kept")


def test_an_unwritable_output_folder_is_a_usage_error_before_any_image(tmp_path: Path, tiny_emt_file: Path) -> None:
    inputs = _inputs(tmp_path / "in")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = _restore(inputs, blocker / "out", tiny_emt_file)
    assert result.exit_code == 2, result.output
    assert "cannot write to the output folder" in result.stderr and result.stdout == ""


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_a_usage_error(tmp_path: Path, tiny_emt_file: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        result = _restore(_inputs(tmp_path / "in"), out, tiny_emt_file)
    finally:
        out.chmod(0o755)
    assert result.exit_code == 2 and "cannot write to the output folder" in result.stderr


def test_a_symlinked_sub_folder_of_the_output_is_never_written_through(tmp_path: Path, tiny_emt_file: Path) -> None:
    inputs = _inputs(tmp_path / "in" / "sub")
    _inputs(tmp_path / "in", ("top.png",))
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(JobPlanError, match="symbolic link"):
        plan_jobs([inputs.parent], out, ["sr2"], recursive=True)
    result = _restore(inputs.parent, out, tiny_emt_file, "-r")
    assert result.exit_code == 2 and "outside" in result.stderr
    assert list(elsewhere.iterdir()) == []


def _denoise(*args: str, stdin: bytes | None = None):
    """The cheap x1 base: the output forms, not the model, are under test."""
    return runner.invoke(app, ["restore", *args, "--task", "denoise", "--base", "compactir-default", "-q"], input=stdin)


def test_an_image_name_as_the_output_of_one_input_writes_that_file(tmp_path: Path) -> None:
    _inputs(tmp_path, ("a.png",))
    result = _denoise(str(tmp_path / "a.png"), str(tmp_path / "sub" / "result.png"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sub" / "result.png").is_file() and Image.open(tmp_path / "sub" / "result.png").size == (20, 20)
    folder = tmp_path / "existing.png"
    folder.mkdir()
    assert _denoise(str(tmp_path / "a.png"), str(folder)).exit_code == 0
    assert (folder / "a.png").is_file(), "an existing folder named x.png stays a folder"


@pytest.mark.parametrize("several", [True, False])
def test_an_image_name_as_the_output_of_several_images_is_a_usage_error(tmp_path: Path, several: bool) -> None:
    inputs = _inputs(tmp_path / "in")
    args = [str(inputs / "a.png"), str(inputs / "b.png")] if several else [str(inputs)]
    result = _denoise(*args, str(tmp_path / "result.png"))
    assert result.exit_code == 2, result.output
    assert "names one image file" in result.stderr and "Hint: give an output folder" in result.stderr
    assert not (tmp_path / "result.png").exists()


def test_dash_reads_standard_input_and_writes_standard_output(tmp_path: Path) -> None:
    data = (_inputs(tmp_path, ("a.png",)) / "a.png").read_bytes()
    result = _denoise("-", "-", stdin=data)
    assert result.exit_code == 0, result.stderr
    assert Image.open(io.BytesIO(result.stdout_bytes)).format == "PNG"
    as_file = _denoise("-", str(tmp_path / "out.webp"), stdin=data)
    assert as_file.exit_code == 0 and Image.open(tmp_path / "out.webp").size == (20, 20)
    jpeg = _denoise(str(tmp_path / "a.png"), "-", "--ext", "jpg")
    assert Image.open(io.BytesIO(jpeg.stdout_bytes)).format == "JPEG"


@pytest.mark.parametrize(("args", "message"), [
    (["-", "-", "--json"], "--json prints on standard output"),
    (["-", "out"], "standard input (-) has no file name"),
])
def test_dash_misuse_is_a_usage_error(tmp_path: Path, args: list[str], message: str) -> None:
    result = _denoise(*args, stdin=b"")
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""


def test_quality_reaches_the_jpeg_writer_and_is_checked(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), np.uint8)).save(photo)
    sizes = {}
    for quality in ("10", "100"):
        result = _denoise(str(photo), str(tmp_path / f"q{quality}.jpg"), "--quality", quality)
        assert result.exit_code == 0, result.output
        sizes[quality] = (tmp_path / f"q{quality}.jpg").stat().st_size
    assert sizes["10"] < sizes["100"] / 2
    refused = _denoise(str(photo), str(tmp_path / "q.jpg"), "--quality", "0")
    assert refused.exit_code == 2 and "--quality must be between 1 and 100" in refused.stderr
