"""Image files in and out: bit depth, grayscale, alpha, orientation, metadata, paths, atomicity."""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from adaptir_cli.imaging.formats import ImageReadError, ImageWriteError, LoadedImage, is_image_file
from adaptir_cli.imaging.reading import read_image
from adaptir_cli.imaging.writing import resize_alpha, write_image

RNG = np.random.default_rng(0)
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def encode(samples: np.ndarray, suffix: str) -> bytes:
    """Reference encoder: OpenCV for multi-channel 16-bit (Pillow cannot), Pillow otherwise."""
    if samples.dtype == np.uint16 and samples.ndim == 3:
        bgr = samples[..., [2, 1, 0, 3][: samples.shape[2]]]
        return cv2.imencode(suffix, np.ascontiguousarray(bgr))[1].tobytes()
    buffer = io.BytesIO()
    Image.fromarray(samples).save(buffer, format=Image.registered_extensions()[suffix])
    return buffer.getvalue()


def decode(path: Path, sixteen_bit_colour: bool) -> np.ndarray:
    """Reference decoder. Not OpenCV for 8-bit TIFF: it premultiplies unassociated alpha."""
    if sixteen_bit_colour:
        samples = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
        return samples[..., [2, 1, 0, 3][: samples.shape[2]]]
    with Image.open(path) as picture:
        return np.asarray(picture)


def as_samples(image: LoadedImage) -> np.ndarray:
    """The loaded image back in the file's integer layout, for exact comparisons."""
    peak = 65535 if image.bit_depth == 16 else 255
    planes = [image.rgb[..., :1] if image.grayscale else image.rgb]
    if image.alpha is not None:
        planes.append(image.alpha[..., None])
    samples = np.rint(np.concatenate(planes, axis=2) * peak).astype(np.uint16 if peak == 65535 else np.uint8)
    return samples[..., 0] if samples.shape[2] == 1 else samples


@pytest.mark.parametrize(
    "suffix,dtype,channels",
    [
        (".png", np.uint8, 3), (".png", np.uint16, 3), (".png", np.uint8, 4), (".png", np.uint16, 4),
        (".png", np.uint8, 1), (".png", np.uint16, 1), (".tif", np.uint16, 3), (".tiff", np.uint16, 1),
        (".tif", np.uint8, 4), (".bmp", np.uint8, 3),
    ],
)
def test_round_trip_keeps_bits_channels_and_alpha(tmp_path: Path, suffix: str, dtype: type, channels: int) -> None:
    shape = (6, 9) if channels == 1 else (6, 9, channels)
    samples = RNG.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    source = tmp_path / f"in{suffix}"
    source.write_bytes(encode(samples, suffix))

    loaded = read_image(source)
    assert loaded.rgb.dtype == np.float32 and loaded.rgb.shape == (6, 9, 3)
    assert loaded.bit_depth == (16 if dtype == np.uint16 else 8)
    assert loaded.grayscale == (channels == 1)
    assert (loaded.alpha is not None) == (channels == 4)
    assert np.array_equal(as_samples(loaded), samples)

    target = tmp_path / f"out{suffix}"
    assert write_image(target, loaded.rgb, loaded) == []
    written = decode(target, sixteen_bit_colour=dtype == np.uint16 and channels > 1)
    assert written.dtype == dtype and np.array_equal(written, samples)


def test_sixteen_bit_grey_alpha_png(tmp_path: Path) -> None:
    """Colour type 4 at 16 bits: Pillow misreads it as 8-bit RGBA, so build one by hand."""
    grey_alpha = RNG.integers(0, 65536, (3, 5, 2)).astype(">u2")

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + row.tobytes() for row in grey_alpha)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 3, 16, 4, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    (tmp_path / "la.png").write_bytes(png)
    loaded = read_image(tmp_path / "la.png")
    assert loaded.grayscale and loaded.bit_depth == 16
    assert np.array_equal(as_samples(loaded), grey_alpha.astype(np.uint16))


def test_grayscale_is_written_as_luma(tmp_path: Path) -> None:
    grey = LoadedImage(np.zeros((2, 2, 3), np.float32), None, 8, True, None, None, "PNG")
    colour = np.zeros((2, 2, 3), np.float32)
    colour[..., 1] = 1.0  # pure green: BT.601 luma 0.587
    write_image(tmp_path / "g.png", colour, grey)
    with Image.open(tmp_path / "g.png") as written:
        assert written.mode == "L" and np.all(np.asarray(written) == 150)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_and_reset(tmp_path: Path, orientation: int) -> None:
    samples = RNG.integers(0, 256, (4, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "adaptir-test"
    source = tmp_path / "o.png"
    Image.fromarray(samples).save(source, exif=exif.tobytes())

    loaded = read_image(source)
    with Image.open(source) as reference:
        upright = np.asarray(ImageOps.exif_transpose(reference))
    assert np.array_equal(as_samples(loaded), upright)

    target = tmp_path / "o.jpg"
    write_image(target, loaded.rgb, loaded)
    with Image.open(target) as written:
        assert written.getexif()[0x0112] == 1 and written.getexif()[0x010F] == "adaptir-test"


@pytest.mark.parametrize("suffix,bits", [(".png", 8), (".png", 16), (".jpg", 8), (".webp", 8), (".tif", 8)])
def test_icc_and_exif_kept(tmp_path: Path, suffix: str, bits: int) -> None:
    exif = Image.Exif()
    exif[0x010F] = "adaptir-test"
    loaded = LoadedImage(
        np.full((4, 4, 3), 0.5, np.float32), None, bits, False, SRGB, exif.tobytes(), "PNG",
    )
    target = tmp_path / f"m{suffix}"
    assert write_image(target, loaded.rgb, loaded) == []
    reread = read_image(target)
    assert reread.icc_profile == SRGB
    assert reread.bit_depth == bits
    if suffix != ".tif":  # a TIFF's EXIF lives among its layout tags and is not carried over
        assert _exif_make(reread.exif) == "adaptir-test"


def _exif_make(raw: bytes | None) -> str | None:
    exif = Image.Exif()
    exif.load(raw or b"")
    return exif.get(0x010F)


def test_what_a_format_cannot_hold_is_reported(tmp_path: Path) -> None:
    loaded = LoadedImage(
        np.full((4, 4, 3), 0.25, np.float32), np.full((4, 4), 0.5, np.float32), 16, False, SRGB, None, "PNG",
    )
    notes = write_image(tmp_path / "x.jpg", loaded.rgb, loaded)
    assert any("transparency dropped" in note for note in notes)
    assert any("8-bit" in note for note in notes)
    assert "ICC profile left out: BMP cannot hold it" in write_image(tmp_path / "x.bmp", loaded.rgb, loaded)
    assert not any("ICC" in note for note in write_image(tmp_path / "y.bmp", loaded.rgb, loaded, keep_metadata=False))
    assert any("ICC profile/EXIF left out" in note for note in write_image(tmp_path / "x.tif", loaded.rgb, loaded))
    assert write_image(tmp_path / "x.webp", loaded.rgb, loaded) == ["written as 8-bit: WEBP holds 8 bits per channel"]
    webp = read_image(tmp_path / "x.webp")
    assert webp.alpha is not None and abs(float(webp.alpha.mean()) - 0.5) < 0.01


def test_unicode_paths(tmp_path: Path) -> None:
    folder = tmp_path / "фото 图像"
    target = folder / "résumé ü.png"
    image = RNG.random((5, 4, 3)).astype(np.float32)
    write_image(target, image)
    loaded = read_image(target)
    assert np.abs(loaded.rgb - image).max() <= 0.5 / 255 + 1e-6
    assert is_image_file(target)


def test_failed_encoder_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    existing = tmp_path / "kept.png"
    write_image(existing, np.zeros((3, 3, 3), np.float32))
    before = existing.read_bytes()

    def broken_save(self: Image.Image, handle: io.BufferedWriter, *args: object, **kwargs: object) -> None:
        handle.write(b"\x89PNG half a file")
        raise OSError("encoder error -2")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    for name in ("new.png", "kept.png"):
        with pytest.raises(ImageWriteError, match="encoder error"):
            write_image(tmp_path / name, np.ones((3, 3, 3), np.float32))
    assert sorted(os.listdir(tmp_path)) == ["kept.png"]
    assert existing.read_bytes() == before


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_written_file_follows_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_image(tmp_path / "p.png", np.zeros((2, 2, 3), np.float32))
    finally:
        os.umask(previous)
    assert (tmp_path / "p.png").stat().st_mode & 0o777 == 0o644


def test_unreadable_files_raise_image_read_error(tmp_path: Path) -> None:
    png = encode(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8), ".png")
    (tmp_path / "truncated.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "noise.png").write_bytes(RNG.integers(0, 256, 500, dtype=np.uint8).tobytes())
    for name in ("truncated.png", "noise.png", "missing.png"):
        with pytest.raises(ImageReadError, match=name):
            read_image(tmp_path / name)


def test_bad_write_requests(tmp_path: Path) -> None:
    with pytest.raises(ImageWriteError, match=".png"):
        write_image(tmp_path / "x.gif", np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="resize_alpha"):
        write_image(tmp_path / "x.png", np.zeros((4, 4, 3), np.float32), alpha=np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "x.png", np.full((2, 2, 3), np.nan, np.float32))
    assert os.listdir(tmp_path) == []


def test_resize_alpha_is_smooth_and_clipped() -> None:
    alpha = np.zeros((8, 8), np.float32)
    alpha[:, 4:] = 1.0
    resized = resize_alpha(alpha, 4)
    assert resized.shape == (32, 32) and resized.dtype == np.float32
    assert resized.min() >= 0 and resized.max() <= 1
    assert np.any((resized > 0.05) & (resized < 0.95))  # a soft edge, not nearest-neighbour steps
    assert resize_alpha(alpha, 1) is alpha


def test_is_image_file(tmp_path: Path) -> None:
    for name in ("a.PNG", "b.jpeg", ".hidden.png", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    assert sorted(p.name for p in tmp_path.iterdir() if is_image_file(p)) == ["a.PNG", "b.jpeg"]


def test_benchmark_files_from_shared(shared: Path, tmp_path: Path) -> None:
    """Real files: Set14's grayscale bridge, a McMaster TIFF, a BSD400 JPEG."""
    bridge = read_image(shared / "data/test/Set14/bridge.png")
    assert bridge.grayscale and bridge.bit_depth == 8 and bridge.rgb.shape == (512, 512, 3)
    write_image(tmp_path / "bridge.png", bridge.rgb, bridge)
    with Image.open(tmp_path / "bridge.png") as written, Image.open(shared / "data/test/Set14/bridge.png") as original:
        assert written.mode == "L" and np.array_equal(np.asarray(written), np.asarray(original.convert("L")))
    mcmaster = read_image(shared / "data/test/McMaster/01.tif")
    assert mcmaster.format == "TIFF" and not mcmaster.grayscale and mcmaster.rgb.shape == (500, 500, 3)
    photo = read_image(shared / "data/train/BSD400/100007.jpg")
    assert photo.format == "JPEG" and photo.bit_depth == 8 and photo.rgb.shape[2] == 3
