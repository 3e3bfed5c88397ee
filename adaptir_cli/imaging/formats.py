"""What adaptir knows about image files before touching pixels: the formats and what each can hold,
the errors, the decoded-image record and the size limits (reading.py and writing.py use them).

Images are float32 RGB in [0, 1] everywhere inside adaptir; files are where they are not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Real photos fit (a 102 MP medium-format frame is 11648 x 8736); a file declaring more is far
# more often damaged or hostile: decoding a 12000 x 12000 header with 700 bytes behind it holds
# 4.4 GB of grey for minutes. `--max-megapixels` raises the limit for genuine giants.
DEFAULT_MAX_MEGAPIXELS = 120.0

# JPEG/WebP quality of outputs (--quality): visually lossless for restored photos.
DEFAULT_QUALITY = 95


class ImageReadError(ValueError):
    """A file cannot be read as an image; the message names the file and what to try."""


class ImageTooLargeError(ImageReadError):
    """A file declares more pixels than the --max-megapixels limit; refused before decoding."""


class ImageWriteError(ValueError):
    """An image cannot be written to the requested path; the message says why."""


@dataclass(frozen=True)
class Format:
    """What one output format can hold, so `write_image` knows what to convert or leave out."""

    name: str  # Pillow's name for the format
    max_bit_depth: int
    alpha: bool
    grayscale: bool
    icc: bool
    exif: bool


PNG = Format("PNG", 16, alpha=True, grayscale=True, icc=True, exif=True)
TIFF = Format("TIFF", 16, alpha=True, grayscale=True, icc=True, exif=True)
JPEG = Format("JPEG", 8, alpha=False, grayscale=True, icc=True, exif=True)
WEBP = Format("WEBP", 8, alpha=True, grayscale=False, icc=True, exif=True)

# Pillow writes RGBA BMPs but reads them back without alpha: treat BMP as opaque.
BMP = Format("BMP", 8, alpha=False, grayscale=True, icc=False, exif=False)

FORMATS: dict[str, Format] = {
    ".png": PNG,
    ".tif": TIFF,
    ".tiff": TIFF,
    ".jpg": JPEG,
    ".jpeg": JPEG,
    ".webp": WEBP,
    ".bmp": BMP,
}

IMAGE_EXTENSIONS: frozenset[str] = frozenset(FORMATS)


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


def icc_colour_space(icc: bytes) -> bytes:
    """The data colour space signature of an ICC profile (header bytes 16-19): b"RGB ", b"GRAY", ..."""
    return icc[16:20]
