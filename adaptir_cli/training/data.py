"""Training data: image folders, pairing, exclusion lists, the in-memory cache and size checks.

Everything here runs before the first training step, so a wrong folder, an unpaired file or an
LR image of the wrong size is reported at once, with the offending files listed, instead of
after hours of training. Images are decoded once and kept in memory as 8-bit (or 16-bit)
arrays: BSD400 takes about 185 MB that way, four times less than as float32, and a CPU
training step never waits for a JPEG decoder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptir_cli.imaging.formats import ImageReadError, is_image_file
from adaptir_cli.imaging.reading import read_image

# Fields a pairing template may use, taken from the ground-truth file name "0001.png":
# {name} = "0001.png", {stem} = "0001", {ext} = ".png". DIV2K's x4 LR files: "{stem}x4{ext}".
TEMPLATE_FIELDS = ("name", "stem", "ext")
# Problems listed in an error message before "... and N more".
_SHOWN = 12
# Independent random streams derived from one --seed (numpy SeedSequence entropy words), so that
# adding a draw for one purpose never shifts the numbers another purpose sees.
EPOCH_STREAM, SAMPLE_STREAM, VALIDATION_STREAM, TASK_STREAM, HOLDOUT_STREAM = range(5)


class DataError(ValueError):
    """The training or validation data cannot be used; the message lists what to fix."""


def _listing(problems: Sequence[str]) -> str:
    shown = [f"  {line}" for line in problems[:_SHOWN]]
    if len(problems) > _SHOWN:
        shown.append(f"  ... and {len(problems) - _SHOWN} more")
    return "\n".join(shown)


def read_name_list(path: Path) -> set[str]:
    """File names from a text file: separated by white space or new lines, '#' starts a comment.

    The contamination list of ../shared/data/README.md can be pasted as it is.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise DataError(f"cannot read the exclusion list {path}: {error.strerror or error}") from None
    return {word for line in text.splitlines() for word in line.split("#", 1)[0].split()}


def list_images(folder: Path, exclude: Collection[str] = ()) -> list[Path]:
    """The image files directly in `folder`, sorted by name, minus those named in `exclude`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    found = [path for path in sorted(folder.iterdir()) if is_image_file(path) and path.name not in exclude]
    if not found:
        raise DataError(f"no images in {folder}" + (" after the exclusion list" if exclude else ""))
    return found


def pair_files(gt_files: Sequence[Path], lq_folder: Path, template: str | None = None) -> list[tuple[Path, Path]]:
    """(gt, lq) for every ground-truth file; a ground truth without its input is an error.

    Without `template` an input pairs with the ground truth of the same file name or, failing
    that, of the same stem (0001.png with 0001.jpg). With a template, the input's name is the
    template filled from the ground truth's name (see TEMPLATE_FIELDS). Inputs left without a
    ground truth are ignored: an LR folder often holds other scales too.
    """
    lq_folder = Path(lq_folder)
    if not lq_folder.is_dir():
        raise DataError(f"input (--lq) folder not found: {lq_folder}")
    candidates = [path for path in sorted(lq_folder.iterdir()) if is_image_file(path)]
    by_name = {path.name: path for path in candidates}
    by_stem: dict[str, list[Path]] = {}
    for path in candidates:
        by_stem.setdefault(path.stem, []).append(path)
    pairs, missing = [], []
    for gt in gt_files:
        if template is not None:
            expected = fill_template(template, gt)
            lq = by_name.get(expected)
            why = expected
        else:
            same_stem = by_stem.get(gt.stem, [])
            lq = by_name.get(gt.name) or (same_stem[0] if len(same_stem) == 1 else None)
            if len(same_stem) < 2:
                why = f"named {gt.stem}.*"
            else:
                why = f"{gt.stem}.* is ambiguous: " + ", ".join(path.name for path in same_stem)
        if lq is None:
            missing.append(f"{gt.name}: no input {why}")
        else:
            pairs.append((gt, lq))
    if missing:
        hint = (
            "Hint: name inputs like their ground truth, or give the naming rule with --lq-template "
            "(e.g. '{stem}x4{ext}' for DIV2K's 0001x4.png)."
        )
        raise DataError(f"{len(missing)} ground-truth images have no input in {lq_folder}:\n{_listing(missing)}\n{hint}")
    return pairs


def fill_template(template: str, gt: Path) -> str:
    try:
        return template.format(name=gt.name, stem=gt.stem, ext=gt.suffix)
    except (KeyError, IndexError, ValueError) as error:
        raise DataError(
            f"invalid --lq-template {template!r} ({error}); use the fields "
            + ", ".join("{" + field + "}" for field in TEMPLATE_FIELDS)
        ) from None


def decode(path: Path) -> np.ndarray:
    """One image as uint8 (or uint16 for 16-bit files) H x W x 3; grey images are repeated to RGB."""
    image = read_image(path)
    peak = 65535.0 if image.bit_depth == 16 else 255.0
    dtype = np.uint16 if image.bit_depth == 16 else np.uint8
    return np.rint(image.rgb * peak).astype(dtype)


def load_images(paths: Sequence[Path], workers: int = 1) -> list[np.ndarray]:
    """Decode every file once (in `workers` threads: the decoders release the GIL); order kept.

    Every unreadable file is listed in one error rather than failing on the first.
    """
    def attempt(path: Path) -> np.ndarray | str:
        try:
            return decode(path)
        except ImageReadError as error:
            return str(error)

    if workers > 1 and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(attempt, paths))
    else:
        results = [attempt(path) for path in paths]
    failed = [result for result in results if isinstance(result, str)]
    if failed:
        raise DataError(f"{len(failed)} images cannot be read:\n{_listing(failed)}")
    return results  # type: ignore[return-value]


def to_float(pixels: np.ndarray) -> np.ndarray:
    """Cached integer pixels -> float32 in [0, 1], the convention everywhere inside adaptir."""
    return pixels.astype(np.float32) / np.float32(np.iinfo(pixels.dtype).max)


@dataclass
class ImageSet:
    """Decoded clean images (ground truth) and, for paired data, their inputs."""

    names: list[str]
    gt: list[np.ndarray]
    lq: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices: Sequence[int]) -> "ImageSet":
        return ImageSet(
            names=[self.names[i] for i in indices],
            gt=[self.gt[i] for i in indices],
            lq=None if self.lq is None else [self.lq[i] for i in indices],
        )


def load_clean(folder: Path, exclude: Collection[str] = (), workers: int = 1) -> ImageSet:
    files = list_images(folder, exclude)
    return ImageSet([path.name for path in files], load_images(files, workers))


def load_pairs(
    gt_folder: Path, lq_folder: Path, template: str | None = None, exclude: Collection[str] = (), workers: int = 1
) -> ImageSet:
    pairs = pair_files(list_images(gt_folder, exclude), lq_folder, template)
    images = load_images([path for pair in pairs for path in pair], workers)
    return ImageSet([gt.name for gt, _ in pairs], images[0::2], images[1::2])


def check_sizes(images: ImageSet, scale: int, patch: int) -> None:
    """Refuse, listing every offender, images that cannot give a `patch` px input at `scale`.

    Paired data: the ground truth must be `scale` times its input, give or take the fewer than
    `scale` rows/columns an un-mod-cropped ground truth has (they are cropped away). Synthetic
    data: the ground truth must hold a `patch * scale` crop.
    """
    problems = []
    for index, name in enumerate(images.names):
        gt_h, gt_w = images.gt[index].shape[:2]
        if images.lq is None:
            if min(gt_h, gt_w) < patch * scale:
                problems.append(f"{name}: {gt_w}x{gt_h} is smaller than the {patch * scale} px crop (--patch {patch} x{scale})")
            continue
        lq_h, lq_w = images.lq[index].shape[:2]
        if not (0 <= gt_h - lq_h * scale < scale and 0 <= gt_w - lq_w * scale < scale):
            problems.append(
                f"{name}: ground truth {gt_w}x{gt_h}, input {lq_w}x{lq_h}; x{scale} needs the ground truth "
                f"to be {lq_w * scale}x{lq_h * scale}"
            )
        elif min(lq_h, lq_w) < patch:
            problems.append(f"{name}: input {lq_w}x{lq_h} is smaller than --patch {patch}")
    if problems:
        raise DataError(
            f"{len(problems)} of {len(images)} images do not fit x{scale} training with --patch {patch}:\n"
            f"{_listing(problems)}\nHint: fix or remove these files, or lower --patch."
        )


# The validation split when none is asked for (finetune's default, AUTO_VALIDATION): a tenth of
# the images, at most 8 so that validating whole images stays cheap, none from a single image.
# Without it a user cannot tell whether an adapter helps at all.
AUTO_VALIDATION = None
_AUTO_SHARE, _AUTO_MAX = 0.1, 8


def holdout(count: int, fraction: float | None, seed: int) -> tuple[list[int], list[int]]:
    """Split image indices into (train, validation): a seeded `fraction` (None: the default) is held out.

    At least one image is held out when `fraction` > 0, and at least one is left to train on.
    """
    if fraction is AUTO_VALIDATION:
        held = min(_AUTO_MAX, math.ceil(count * _AUTO_SHARE)) if count >= 2 else 0
    elif not 0.0 <= fraction < 1.0:
        raise DataError(f"--val-fraction must be in [0, 1), got {fraction}")
    else:
        held = min(count - 1, math.ceil(count * fraction)) if fraction > 0 else 0
        if fraction > 0 and held < 1:
            raise DataError(f"--val-fraction needs at least 2 images to hold one out; there are {count}")
    order = np.random.default_rng([seed, HOLDOUT_STREAM]).permutation(count)
    return sorted(order[held:].tolist()), sorted(order[:held].tolist())


@dataclass(frozen=True)
class DataOptions:
    """Where training and validation images come from (the data flags of finetune and pretrain)."""

    gt: Path
    lq: Path | None = None  # given inputs, paired with `gt` by name or `lq_template`
    degradation: str | None = None  # or inputs synthesised from `gt` (default: the task's own)
    lq_template: str | None = None
    exclude: Path | None = None  # a file listing image names to leave out
    val_gt: Path | None = None
    val_lq: Path | None = None
    val_fraction: float | None = 0.0  # AUTO_VALIDATION (None): a tenth of `gt`, at most 8 images
    val_crop: int = 0  # centred validation crop in input px; 0: whole images

    def to_json(self) -> dict[str, Any]:
        return {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class PreparedData:
    train: ImageSet
    validation: ImageSet | None
    excluded: int  # names on the exclusion list

    def summary(self, options: DataOptions) -> dict[str, Any]:
        """What a run trained and validated on, for its log and its output's metadata."""
        return {
            **options.to_json(), "train_images": len(self.train), "excluded_names": self.excluded,
            "validation_images": len(self.validation) if self.validation else 0,
        }


def prepare_images(options: DataOptions, paired: bool, seed: int, workers: int) -> PreparedData:
    """Decode the training images (and their held-out or separate validation images) once."""
    exclude = read_name_list(options.exclude) if options.exclude else set()
    if paired:
        images = load_pairs(options.gt, options.lq, options.lq_template, exclude, workers)  # type: ignore[arg-type]
    else:
        images = load_clean(options.gt, exclude, workers)
    validation = None
    if options.val_gt is not None:
        if options.val_fraction:  # AUTO_VALIDATION gives way to the images given
            raise DataError("give either --val-gt or --val-fraction, not both")
        if options.val_lq is not None:
            validation = load_pairs(options.val_gt, options.val_lq, options.lq_template, workers=workers)
        elif paired:
            raise DataError("training on given pairs (--lq) validates on given pairs too: add --val-lq")
        else:
            validation = load_clean(options.val_gt, workers=workers)
    elif options.val_lq is not None:
        raise DataError("--val-lq needs --val-gt (the ground truth of those inputs)")
    elif options.val_fraction is AUTO_VALIDATION or options.val_fraction:
        kept, held = holdout(len(images), options.val_fraction, seed)
        if held:
            images, validation = images.subset(kept), images.subset(held)
    return PreparedData(images, validation, len(exclude))


def default_workers() -> int:
    """Threads that decode the training images: the cores, up to 4."""
    return max(1, min(4, os.cpu_count() or 1))
