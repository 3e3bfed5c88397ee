"""Writing restored images: the output's samples (bit depth, grayscale, alpha) planned from the
input file, ICC profile and EXIF written back where the format can hold them (`write_image` says
what it had to leave out), and a file that appears complete or not at all (adaptir_cli.atomic_files),
also when encoding fails half-way; an output another run wrote meanwhile is not clobbered unless asked.

Pillow encodes everything except 16-bit images with several channels: OpenCV encodes those in
memory, and for PNG the ICC profile and EXIF are re-inserted as chunks by hand.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import cv2
import numpy as np
from PIL import Image

from adaptir_cli.atomic_files import TargetExistsError, atomic_write
from adaptir_cli.imaging.formats import DEFAULT_QUALITY, Format, FORMATS, icc_colour_space, IMAGE_EXTENSIONS, ImageWriteError, JPEG, LoadedImage, PNG, TIFF, WEBP

T = TypeVar("T")

# ITU-R BT.601 luma, the weights Pillow's convert("L") uses: a restored grayscale image is
# turned back into one channel the way every viewer would show the RGB version.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


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
    spec: Format
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
    spec = FORMATS.get(extension.lower())
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
    if icc is not None and icc_colour_space(icc) != (b"GRAY" if grayscale else b"RGB "):
        notes.append("ICC profile left out: it does not describe the written colour channels")
        icc = None
    # Pillow would truncate 16-bit images with several channels to 8 bits: OpenCV writes those.
    use_opencv = depth == 16 and (has_alpha or not grayscale)
    if use_opencv and spec is TIFF and (icc or exif):
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
    samples: np.ndarray, spec: Format, icc: bytes | None, exif: bytes | None, quality: int
) -> Callable[[BinaryIO], None]:
    # Pillow picks the mode from the array: L, LA, RGB, RGBA, or I;16 for one uint16 channel.
    picture = Image.fromarray(samples[..., 0] if samples.shape[2] == 1 else samples)
    options: dict[str, object] = {}
    if icc:
        options["icc_profile"] = icc
    if exif:
        options["exif"] = exif
    if spec is JPEG:
        # 4:4:4: chroma subsampling would blur the colour detail the model just restored.
        options.update(quality=quality, subsampling=0)
    elif spec is WEBP:
        options["quality"] = quality
    elif spec is TIFF:
        options["compression"] = "tiff_lzw"
    return lambda handle: picture.save(handle, format=spec.name, **options)


def _opencv_encoder(
    samples: np.ndarray, spec: Format, icc: bytes | None, exif: bytes | None
) -> Callable[[BinaryIO], None]:
    if samples.shape[2] == 2:  # grey + alpha: OpenCV writes 1, 3 or 4 channels only
        samples = samples[..., [0, 0, 0, 1]]
    bgr = np.ascontiguousarray(samples[..., [2, 1, 0, 3][: samples.shape[2]]])
    ok, encoded = cv2.imencode(".png" if spec is PNG else ".tiff", bgr)
    if not ok:
        raise ValueError(f"OpenCV could not encode a 16-bit {spec.name}")
    payload = encoded.tobytes()
    if spec is PNG:
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
