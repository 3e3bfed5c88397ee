"""Reading image files into float32 RGB in [0, 1], keeping what users lose with other tools
(shared/design/USERS.md, pains 2 and 5-9): the bit depth comes from the file's sample type (8 or
16), never from the pixel values; grayscale files come back grayscale; transparency travels as a
separate alpha plane; EXIF orientation is applied; ICC profile and EXIF are kept for writing;
files are opened by Python as bytes, never by OpenCV from a path, so Unicode names work.

Pillow decodes everything except 16-bit images with several channels, which it silently
truncates to 8 bits: those are decoded by OpenCV in memory.
"""

from __future__ import annotations

import io
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from adaptir_cli.imaging.formats import DEFAULT_MAX_MEGAPIXELS, icc_colour_space, ImageReadError, ImageTooLargeError, LoadedImage

# EXIF tag 0x0112; values 1..8 as defined by the EXIF standard (CIPA DC-008).
_ORIENTATION = 0x0112

# Pillow modes holding one 16-bit channel; "I" (32-bit) appears for some 16-bit grey files.
_GRAY16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

# Pillow's process-wide decoding switches: held while adaptir decodes (see _strict_pillow).
_PILLOW_SWITCHES = threading.Lock()

# The transform that shows the stored pixels upright, per EXIF orientation value.
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def read_image(path: str | os.PathLike[str], *, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS) -> LoadedImage:
    """Decode `path` into a `LoadedImage`; raises `ImageReadError` for missing or damaged files.

    A file declaring more than `max_megapixels` (None: no limit) is refused from its header,
    before any pixel is decoded; truncated pixel data is an error, never filled in.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ImageReadError(f"cannot read {path}: it is a broken symbolic link (to {os.readlink(path)})")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return decode_image(data, str(path), max_megapixels=max_megapixels)


def decode_image(
    data: bytes, name: str, *, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS
) -> LoadedImage:
    """Decode an encoded image held in memory (a file's or standard input's bytes), as `read_image`
    does; `name` is what error messages call it."""
    limit = None if max_megapixels is None else int(max_megapixels * 1_000_000)
    try:
        return _decode(data, limit)
    except _TooManyPixels as exc:
        width, height = exc.args
        raise ImageTooLargeError(
            f"refused {name}: it declares {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), "
            f"more than the limit of {max_megapixels:g}; damaged files often declare sizes their data "
            f"cannot fill\nHint: if the image is genuine, pass --max-megapixels {-(-width * height // 1_000_000)}."
        ) from None
    except UnidentifiedImageError:
        raise ImageReadError(
            f"cannot read {name}: not an image in a format adaptir reads (PNG, JPEG, TIFF, WebP, BMP)\n"
            "Hint: check that the file is an image and complete; re-saving it as PNG usually helps."
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, cv2.error) as exc:
        raise ImageReadError(
            f"cannot read {name} as an image: {exc}\n"
            "Hint: check that the file is complete; re-saving it as PNG usually helps."
        ) from exc


def is_complete_image(path: str | os.PathLike[str]) -> bool:
    """Whether `path` holds a whole image: what a rerun may skip (an empty or cut-off one is redone).

    PNG is checked chunk by chunk (CRCs, the end chunk) without decoding; other formats decode.
    """
    try:
        with _strict_pillow(), Image.open(path) as picture:
            if picture.format == "PNG":
                picture.verify()
            else:
                picture.load()
    except Exception:  # any failure to read it back means it is not a usable output
        return False
    return True


class _TooManyPixels(Exception):
    """Raised from the header check; read_image turns it into an ImageTooLargeError naming the file."""


@contextmanager
def _strict_pillow() -> Iterator[None]:
    """Pillow switches as adaptir needs them, whatever another library in the process set.

    LOAD_TRUNCATED_IMAGES would fill missing data with grey: it is forced off, so a cut-off file
    is an error. MAX_IMAGE_PIXELS is lifted: read_image's own limit (--max-megapixels) replaces
    Pillow's, which warns at 89 and refuses at 179 megapixels whatever the user asked for.
    """
    with _PILLOW_SWITCHES:
        truncated, pixels = ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS
        ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = False, None
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = truncated, pixels


def _decode(data: bytes, max_pixels: int | None) -> LoadedImage:
    with _strict_pillow(), Image.open(io.BytesIO(data)) as picture:
        width, height = picture.size  # from the header: nothing is decoded yet
        if max_pixels is not None and width * height > max_pixels:
            raise _TooManyPixels(width, height)
        picture_format = picture.format or "unknown"
        bits = _stored_bits(data, picture)
        if bits == 16 and picture.mode not in _GRAY16_MODES | {"I"}:
            samples = _opencv_samples(data, _stored_single_channel(data, picture))
        else:
            samples = _pillow_samples(picture, bits)
        orientation = picture.getexif().get(_ORIENTATION, 1)
        icc = picture.info.get("icc_profile") or None
        exif = _upright_exif(picture.info.get("exif"))
    grayscale = samples.shape[2] in (1, 2)
    if icc is not None and icc_colour_space(icc) != (b"GRAY" if grayscale else b"RGB "):
        # A CMYK or Lab profile converted to RGB pixels would mislabel them: drop it.
        icc = None
    samples = _UPRIGHT.get(orientation, lambda array: array)(samples)
    values = samples.astype(np.float32) / np.float32(np.iinfo(samples.dtype).max)
    rgb = np.repeat(values[..., :1], 3, axis=2) if grayscale else np.ascontiguousarray(values[..., :3])
    alpha = np.ascontiguousarray(values[..., -1]) if samples.shape[2] in (2, 4) else None
    return LoadedImage(
        rgb=rgb,
        alpha=alpha,
        bit_depth=16 if samples.dtype == np.uint16 else 8,
        grayscale=grayscale,
        icc_profile=icc,
        exif=exif,
        format=picture_format,
    )


def _stored_bits(data: bytes, picture: Image.Image) -> int:
    """Bits per sample as stored in the file (Pillow's mode hides 16-bit colour PNG/TIFF)."""
    if picture.format == "PNG":
        return data[24]  # IHDR is always the first chunk; its bit depth is byte 24
    if picture.format == "TIFF":
        bits = picture.tag_v2.get(258, 8)  # BitsPerSample: one value per sample
        return int(max(bits) if isinstance(bits, tuple) else bits)
    return 8


def _stored_single_channel(data: bytes, picture: Image.Image) -> bool:
    """Whether a 16-bit PNG/TIFF has one colour channel (OpenCV expands grey+alpha to BGRA)."""
    if picture.format == "PNG":
        return data[25] in (0, 4)  # IHDR colour type: 0 grey, 4 grey + alpha
    return picture.tag_v2.get(262) in (0, 1)  # TIFF Photometric: WhiteIsZero / BlackIsZero


def _opencv_samples(data: bytes, single_channel: bool) -> np.ndarray:
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.dtype != np.uint16:
        raise ValueError("OpenCV could not decode this 16-bit image")
    if decoded.ndim == 2:
        return decoded[..., None]
    if single_channel:
        return decoded[..., [0, 3] if decoded.shape[2] == 4 else [0]]
    return decoded[..., [2, 1, 0, 3][: decoded.shape[2]]]


def _pillow_samples(picture: Image.Image, bits: int) -> np.ndarray:
    """The file's samples as (H, W, C) uint8/uint16 with C = 1 (grey), 2, 3 (RGB) or 4."""
    mode = picture.mode
    if mode in _GRAY16_MODES or (mode == "I" and bits == 16):
        return np.asarray(picture).astype(np.uint16)[..., None]
    if mode in ("I", "F"):
        raise ValueError(f"images with 32-bit samples (mode {mode}) are not supported; convert it to 8 or 16 bits")
    if mode in ("1", "L"):
        target = "L"
    elif mode in ("LA", "La"):
        target = "LA"
    elif "A" in picture.getbands() or "transparency" in picture.info:
        target = "RGBA"
    else:
        target = "RGB"  # also CMYK, YCbCr, palettes without transparency, ...
    array = np.asarray(picture.convert(target))
    return array.reshape(array.shape[0], array.shape[1], -1)


def _upright_exif(raw: bytes | None) -> bytes | None:
    if not raw:
        return None
    exif = Image.Exif()
    exif.load(raw)
    if _ORIENTATION in exif:
        exif[_ORIENTATION] = 1
    return exif.tobytes()
