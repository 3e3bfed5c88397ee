"""Reading and writing image files: the one place where pixels are not float32 RGB in [0, 1].

What users lose with other tools and keep here (shared/design/USERS.md, pains 2 and 5-9):
- the bit depth comes from the file's sample type (8 or 16), never from the pixel values;
- grayscale files come back grayscale; transparency travels as a separate alpha plane;
- EXIF orientation is applied on read; ICC profile and EXIF are written back where the format
  can hold them, and `write_image` says what it had to leave out;
- files are opened by Python as bytes, never by OpenCV from a path, so Unicode names work;
- an output file appears complete or not at all (adaptir_cli.atomic_files), also when encoding
  fails half-way, and an output another run wrote meanwhile is not clobbered unless asked.

Pillow handles everything except 16-bit images with several channels, which it silently
truncates to 8 bits: those are decoded and encoded by OpenCV in memory, and for PNG the ICC
profile and EXIF are re-inserted as chunks by hand.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from adaptir_cli.atomic_files import TargetExistsError, atomic_write

# EXIF tag 0x0112; values 1..8 as defined by the EXIF standard (CIPA DC-008).
_ORIENTATION = 0x0112
# Pillow modes holding one 16-bit channel; "I" (32-bit) appears for some 16-bit grey files.
_GRAY16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
T = TypeVar("T")
# ITU-R BT.601 luma, the weights Pillow's convert("L") uses: a restored grayscale image is
# turned back into one channel the way every viewer would show the RGB version.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Real photos fit (a 102 MP medium-format frame is 11648 x 8736); a file declaring more is far
# more often damaged or hostile: decoding a 12000 x 12000 header with 700 bytes behind it holds
# 4.4 GB of grey for minutes. `--max-megapixels` raises the limit for genuine giants.
DEFAULT_MAX_MEGAPIXELS = 120.0
# JPEG/WebP quality of outputs (--quality): visually lossless for restored photos.
DEFAULT_QUALITY = 95
# Pillow's process-wide decoding switches: held while adaptir decodes (see _strict_pillow).
_PILLOW_SWITCHES = threading.Lock()


class ImageReadError(ValueError):
    """A file cannot be read as an image; the message names the file and what to try."""


class ImageTooLargeError(ImageReadError):
    """A file declares more pixels than the --max-megapixels limit; refused before decoding."""


class ImageWriteError(ValueError):
    """An image cannot be written to the requested path; the message says why."""


@dataclass(frozen=True)
class _Format:
    """What one output format can hold, so `write_image` knows what to convert or leave out."""

    name: str  # Pillow's name for the format
    max_bit_depth: int
    alpha: bool
    grayscale: bool
    icc: bool
    exif: bool


_PNG = _Format("PNG", 16, alpha=True, grayscale=True, icc=True, exif=True)
_TIFF = _Format("TIFF", 16, alpha=True, grayscale=True, icc=True, exif=True)
_JPEG = _Format("JPEG", 8, alpha=False, grayscale=True, icc=True, exif=True)
_WEBP = _Format("WEBP", 8, alpha=True, grayscale=False, icc=True, exif=True)
# Pillow writes RGBA BMPs but reads them back without alpha: treat BMP as opaque.
_BMP = _Format("BMP", 8, alpha=False, grayscale=True, icc=False, exif=False)

_FORMATS: dict[str, _Format] = {
    ".png": _PNG,
    ".tif": _TIFF,
    ".tiff": _TIFF,
    ".jpg": _JPEG,
    ".jpeg": _JPEG,
    ".webp": _WEBP,
    ".bmp": _BMP,
}

IMAGE_EXTENSIONS: frozenset[str] = frozenset(_FORMATS)


@dataclass
class LoadedImage:
    """A decoded image plus everything that must survive the trip through adaptir.

    `rgb` is already upright (EXIF orientation applied), so `exif` has its orientation reset
    to 1: writing it back unchanged describes the written pixels correctly. EXIF is taken from
    JPEG, PNG and WebP files; a TIFF's tags describe its own layout and are not carried over.
    """

    rgb: np.ndarray  # float32 (H, W, 3) in [0, 1]; a grayscale file repeats its channel
    alpha: np.ndarray | None  # float32 (H, W) in [0, 1]
    bit_depth: int  # 8 or 16: the sample type stored in the file
    grayscale: bool  # the file had a single colour channel
    icc_profile: bytes | None
    exif: bytes | None
    format: str  # Pillow's format name: "PNG", "JPEG", "TIFF", "WEBP", "BMP", ...


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True for an existing file with a known image extension.

    Hidden files are skipped: they are temporary files (ours included) or macOS "._" forks.
    """
    return has_image_name(path) and Path(path).is_file()


def has_image_name(path: str | os.PathLike[str]) -> bool:
    """A known image extension on a name that is not hidden, whether or not the file exists."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


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


def resize_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """The alpha plane of an image `scale` times larger.

    Bicubic keeps anti-aliased edges smooth (nearest would make them blocky); it overshoots
    near hard edges, hence the clip.
    """
    if scale == 1:
        return alpha
    height, width = alpha.shape
    resized = cv2.resize(
        np.ascontiguousarray(alpha, dtype=np.float32), (width * scale, height * scale),
        interpolation=cv2.INTER_CUBIC,
    )
    return np.clip(resized, 0.0, 1.0)


def write_image(
    path: str | os.PathLike[str],
    image: np.ndarray,
    like: LoadedImage | None = None,
    *,
    alpha: np.ndarray | None = None,
    keep_metadata: bool = True,
    quality: int = DEFAULT_QUALITY,
) -> list[str]:
    """Write float RGB `image` (H, W, 3), clipped to [0, 1], in the format `path`'s extension names.

    `like` is the image it was restored from: its bit depth, grayscale-ness, alpha, ICC profile
    and EXIF are reproduced as far as the format allows (without `like`: 8-bit RGB, no
    metadata). `alpha` replaces `like.alpha`; after super-resolution pass
    `resize_alpha(like.alpha, scale)`. `keep_metadata=False` strips ICC and EXIF. `quality`
    applies to JPEG and WebP. Grayscale is written as BT.601 luma, one channel.

    Returns notes on what the format could not hold (e.g. transparency in a JPEG) so the
    caller can tell the user; raises `ImageWriteError`, leaving no file behind, on failure.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"write_image takes RGB pixels of shape (H, W, 3), got {image.shape}")
    if not np.isfinite(image).all():
        raise ValueError(f"refusing to write {path}: the image contains NaN or infinite values")
    if alpha is None and like is not None:
        alpha = like.alpha
    if alpha is not None and alpha.shape != image.shape[:2]:
        raise ValueError(
            f"alpha is {alpha.shape[1]}x{alpha.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}; "
            "pass alpha=resize_alpha(like.alpha, scale) for a resized image"
        )
    plan = plan_output(path, like, has_alpha=alpha is not None, keep_metadata=keep_metadata, quality=quality)
    plan.write(plan.samples(image, alpha))
    return plan.notes


@dataclass
class OutputPlan:
    """How an image will be stored: decided once, so that a large output can be quantised block by
    block of rows (`samples`) into one integer array and written (`write`) without ever holding
    the whole image in float."""

    path: Path
    spec: _Format
    depth: int
    grayscale: bool
    alpha: bool
    icc: bytes | None
    exif: bytes | None
    use_opencv: bool
    quality: int
    notes: list[str]

    @property
    def dtype(self) -> type[np.integer]:
        return np.uint16 if self.depth == 16 else np.uint8

    @property
    def channels(self) -> int:
        return (1 if self.grayscale else 3) + (1 if self.alpha else 0)

    @property
    def colour_channels(self) -> int:
        """The channels that come from the restored RGB (alpha, if any, follows them)."""
        return 1 if self.grayscale else 3

    def samples(self, rgb: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
        """Stored integer samples (h, w, channels) of float RGB rows (and their alpha).

        imaging/device_samples.py computes the colour channels on the device, with the same bits.
        """
        colour = _quantize(luma(rgb)[..., None] if self.grayscale else rgb, self.depth)
        if not (self.alpha and alpha is not None):
            return colour
        return np.concatenate([colour, self.alpha_samples(alpha)], axis=2)

    def alpha_samples(self, alpha: np.ndarray) -> np.ndarray:
        """Stored integer samples (h, w, 1) of an alpha plane."""
        return _quantize(alpha[..., None], self.depth)

    def write(self, samples: np.ndarray, *, replace: bool = True) -> None:
        """Encode and store `samples`; `replace=False` raises TargetExistsError rather than replace a file."""
        try:
            encode = self._encoder(samples)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, encode, replace=replace)
        except TargetExistsError:
            raise
        except (OSError, ValueError, cv2.error) as exc:
            raise ImageWriteError(f"cannot write {self.path}: {exc}") from exc

    def encode(self, samples: np.ndarray) -> bytes:
        """The encoded file as bytes (for standard output): whole before the first byte leaves."""
        buffer = io.BytesIO()
        try:
            self._encoder(samples)(buffer)
        except (OSError, ValueError, cv2.error) as exc:
            raise ImageWriteError(f"cannot encode the image as {self.spec.name}: {exc}") from exc
        return buffer.getvalue()

    def _encoder(self, samples: np.ndarray) -> Callable[[BinaryIO], None]:
        if self.use_opencv:
            return _opencv_encoder(samples, self.spec, self.icc, self.exif)
        return _pillow_encoder(samples, self.spec, self.icc, self.exif, self.quality)


def plan_output(
    path: str | os.PathLike[str],
    like: LoadedImage | None = None,
    *,
    has_alpha: bool = False,
    keep_metadata: bool = True,
    quality: int = DEFAULT_QUALITY,
    extension: str | None = None,
) -> OutputPlan:
    """Decide bit depth, channels and metadata of an output file from its extension and `like`.

    `extension` (".png") names the format where `path` does not (standard output).
    """
    path = Path(path)
    extension = extension or path.suffix
    spec = _FORMATS.get(extension.lower())
    if spec is None:
        known = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ImageWriteError(f"cannot write {path}: unknown image extension {extension!r}; use one of {known}")
    notes: list[str] = []
    depth = like.bit_depth if like is not None else 8
    if depth > spec.max_bit_depth:
        notes.append(f"written as 8-bit: {spec.name} holds 8 bits per channel")
        depth = 8
    grayscale = like is not None and like.grayscale
    if grayscale and not spec.grayscale:
        notes.append(f"written as RGB: {spec.name} has no grayscale mode")
        grayscale = False
    if has_alpha and not spec.alpha:
        notes.append(f"transparency dropped: {spec.name} has no alpha channel; write PNG, TIFF or WebP to keep it")
        has_alpha = False
    if grayscale and has_alpha and depth == 16:
        notes.append("written as RGBA: OpenCV, which writes 16-bit files with alpha, has no grey+alpha mode")
        grayscale = False
    icc = like.icc_profile if like is not None and keep_metadata else None
    exif = like.exif if like is not None and keep_metadata else None
    if icc is not None and _icc_colour_space(icc) != (b"GRAY" if grayscale else b"RGB "):
        notes.append("ICC profile left out: it does not describe the written colour channels")
        icc = None
    # Pillow would truncate 16-bit images with several channels to 8 bits: OpenCV writes those.
    use_opencv = depth == 16 and (has_alpha or not grayscale)
    if use_opencv and spec is _TIFF and (icc or exif):
        notes.append("ICC profile/EXIF left out: 16-bit colour TIFFs are written by OpenCV, which cannot embed them")
        icc = exif = None
    for present, supported, what in ((icc, spec.icc, "ICC profile"), (exif, spec.exif, "EXIF")):
        if present and not supported:
            notes.append(f"{what} left out: {spec.name} cannot hold it")
    return OutputPlan(
        path=path, spec=spec, depth=depth, grayscale=grayscale, alpha=has_alpha,
        icc=icc if spec.icc else None, exif=exif if spec.exif else None,
        use_opencv=use_opencv, quality=quality, notes=notes,
    )


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
    if icc is not None and _icc_colour_space(icc) != (b"GRAY" if grayscale else b"RGB "):
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


def _upright_exif(raw: bytes | None) -> bytes | None:
    if not raw:
        return None
    exif = Image.Exif()
    exif.load(raw)
    if _ORIENTATION in exif:
        exif[_ORIENTATION] = 1
    return exif.tobytes()


def _icc_colour_space(icc: bytes) -> bytes:
    """The data colour space signature of an ICC profile (header bytes 16-19): b"RGB ", b"GRAY", ..."""
    return icc[16:20]


def luma(rgb: T) -> T:
    """BT.601 luma of (..., 3) RGB, NumPy or torch: three float32 products and two sums in this
    order give the same bits in both and on any device, where a matmul's order of additions
    depends on the memory layout (NumPy's even on whether the array is contiguous)."""
    return rgb[..., 0] * _LUMA[0] + rgb[..., 1] * _LUMA[1] + rgb[..., 2] * _LUMA[2]


def _quantize(values: np.ndarray, depth: int) -> np.ndarray:
    dtype = np.uint16 if depth == 16 else np.uint8
    peak = float(np.iinfo(dtype).max)
    return np.rint(np.clip(values, 0.0, 1.0) * peak).astype(dtype)


def _pillow_encoder(
    samples: np.ndarray, spec: _Format, icc: bytes | None, exif: bytes | None, quality: int
) -> Callable[[BinaryIO], None]:
    # Pillow picks the mode from the array: L, LA, RGB, RGBA, or I;16 for one uint16 channel.
    picture = Image.fromarray(samples[..., 0] if samples.shape[2] == 1 else samples)
    options: dict[str, object] = {}
    if icc:
        options["icc_profile"] = icc
    if exif:
        options["exif"] = exif
    if spec is _JPEG:
        # 4:4:4: chroma subsampling would blur the colour detail the model just restored.
        options.update(quality=quality, subsampling=0)
    elif spec is _WEBP:
        options["quality"] = quality
    elif spec is _TIFF:
        options["compression"] = "tiff_lzw"
    return lambda handle: picture.save(handle, format=spec.name, **options)


def _opencv_encoder(
    samples: np.ndarray, spec: _Format, icc: bytes | None, exif: bytes | None
) -> Callable[[BinaryIO], None]:
    if samples.shape[2] == 2:  # grey + alpha: OpenCV writes 1, 3 or 4 channels only
        samples = samples[..., [0, 0, 0, 1]]
    bgr = np.ascontiguousarray(samples[..., [2, 1, 0, 3][: samples.shape[2]]])
    ok, encoded = cv2.imencode(".png" if spec is _PNG else ".tiff", bgr)
    if not ok:
        raise ValueError(f"OpenCV could not encode a 16-bit {spec.name}")
    payload = encoded.tobytes()
    if spec is _PNG:
        payload = _png_with_metadata(payload, icc, exif)
    return lambda handle: handle.write(payload)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_with_metadata(png: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    """Insert iCCP/eXIf chunks right after IHDR (both must precede the image data)."""
    extra = b""
    if icc:
        # Profile name, NUL, compression method 0 (zlib), compressed profile.
        extra += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc))
    if exif:
        extra += _png_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00"))
    ihdr_end = 8 + 4 + 4 + 13 + 4  # signature, then IHDR's length, type, 13-byte body and CRC
    return png[:ihdr_end] + extra + png[ihdr_end:]

