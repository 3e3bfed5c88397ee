"""Bad inputs and bad options: refused early, with a message naming the file or the option."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from typer.testing import CliRunner

from adaptir_cli.cli.app import app
from adaptir_cli.imaging.formats import ImageReadError, ImageTooLargeError
from adaptir_cli.imaging.reading import read_image

runner = CliRunner()


def _png_bytes(size: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A few hundred bytes of JPEG whose header claims `width` x `height` pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    frame = data.find(b"\xff\xc0")
    data[frame + 5:frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_a_file_declaring_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(_jpeg_declaring(12000, 12000))
    assert bomb.stat().st_size < 1000
    with pytest.raises(ImageTooLargeError, match=r"bomb\.jpg.*12000x12000.*\nHint: .*--max-megapixels 144"):
        read_image(bomb)
    with pytest.raises(ImageTooLargeError):
        read_image(bomb, max_megapixels=143)
    small = tmp_path / "small.jpg"
    small.write_bytes(_jpeg_declaring(64, 48))
    assert read_image(small, max_megapixels=0.01).rgb.shape == (48, 64, 3)


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_truncated_files_are_errors_even_when_pillow_is_told_to_fill_them(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, kind.upper())
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as another library may set it
    with pytest.raises(ImageReadError, match=rf"cut\.{kind}.*truncated"):
        read_image(cut)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True, "the process-wide switch is left as it was"


def test_unreadable_files_are_named_with_one_hint(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError) as caught:
        read_image(garbage)
    message = str(caught.value)
    assert "garbage.png" in message and "BytesIO" not in message and message.count("Hint:") == 1


def test_restore_reports_bad_files_and_broken_links_in_a_folder(tmp_path: Path, tiny_emt_file: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "good.png").write_bytes(_png_bytes())
    (inputs / "bomb.jpg").write_bytes(_jpeg_declaring(12000, 12000))
    (inputs / "cut.png").write_bytes(_png_bytes()[:300])
    (inputs / "gone.png").symlink_to(tmp_path / "deleted.png")
    result = runner.invoke(app, [
        "restore", str(inputs), str(tmp_path / "out"), "--task", "sr2", "--base", str(tiny_emt_file), "--json", "-q",
    ])
    assert result.exit_code == 1, result.output
    errors = {Path(r["input"]).name: r["error"] for r in json.loads(result.stdout)["images"]}
    assert errors["good.png"] is None
    assert "12000x12000" in errors["bomb.jpg"] and "cut.png" in errors["cut.png"]
    assert "broken symbolic link" in errors["gone.png"]
    assert result.stderr.count("failed ") == 3
    assert result.stderr.count("Hint:") == 2  # the bomb's and the cut file's, one each

    limited = runner.invoke(app, [
        "restore", str(inputs / "good.png"), str(tmp_path / "limited"), "--task", "sr2", "--base", str(tiny_emt_file),
        "--max-megapixels", "0.001", "-q",
    ])
    assert limited.exit_code == 1 and "--max-megapixels 1" in limited.stderr


def test_a_library_hint_is_not_doubled_by_the_command(tmp_path: Path, tiny_emt_file: Path) -> None:
    image = tmp_path / "x.png"
    image.write_bytes(_png_bytes())
    not_an_adapter = tmp_path / "weights.safetensors"
    not_an_adapter.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    result = runner.invoke(app, [
        "restore", str(image), str(tmp_path / "out"), "--task", "sr2", "--base", str(tiny_emt_file),
        "--adapter", str(not_an_adapter), "-q",
    ])
    assert result.exit_code == 1 and result.stderr.count("Hint:") == 1, result.stderr


@pytest.mark.parametrize(("options", "named"), [
    (["--tile", "-1"], "--tile"),
    (["--tile", "64", "--overlap", "64"], "--overlap"),
    (["--overlap", "-3"], "--overlap"),
    (["--ext", "gif"], "--ext"),
    (["--ext", "png/x"], "--ext"),
    (["--suffix", "a/b"], "--suffix"),
    (["--device", "banana"], "--device"),
    (["--precision", "fp8"], "--precision"),
    (["--adapter", "missing.safetensors"], "--adapter"),
    (["--base", "no-such-base"], "--base"),
    (["--max-megapixels", "-1"], "--max-megapixels"),
])
def test_bad_options_are_usage_errors_before_any_work(
    tmp_path: Path, tiny_emt_file: Path, options: list[str], named: str
) -> None:
    image = tmp_path / "x.png"
    image.write_bytes(_png_bytes())
    base = [] if "--base" in options else ["--base", str(tiny_emt_file)]
    result = runner.invoke(app, ["restore", str(image), str(tmp_path / "out"), "--task", "sr2", *base, *options, "-q"])
    assert result.exit_code == 2, result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and named in error_lines[0], result.stderr
    assert "report it" not in result.stderr
    assert not (tmp_path / "out" / "x.png").exists()
