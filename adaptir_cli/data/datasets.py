"""The standard test sets: where each comes from, what its folder holds, and where adaptir finds it.

adaptir ships no test images (their terms forbid redistribution, and papers' numbers need the
exact files): users download each set from the official source named here and put it in a data
folder. A set is looked up, in this order, in `--data DIR`, in $ADAPTIR_DATA and in the cache
($ADAPTIR_HOME/data); the first folder holding it must hold all of it, because a partial set
gives numbers that look comparable with papers and are not.

Two layouts exist. Clean sets (Set5, CBSD68, ...) hold ground-truth images only; the task's
degradation makes the inputs. Pair sets (Rain100L, LOL) hold fixed input/target pairs, matched
by the part of the file name that `{id}` marks in a template ("input/rain-{id}.png" with
"target/norain-{id}.png"); numeric ids are matched by value, so rain-1.png pairs norain-001.png.
Any other folder works as a custom set: a folder of images, or of pairs given by two templates.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from adaptir_cli.imaging.formats import is_image_file
from adaptir_cli.weights.cache import home

ID_FIELD = "{id}"
_SR_TASKS = ("sr2", "sr3", "sr4", "lr4-noise30", "lr4-jpeg30")
_COLOR_DENOISE_TASKS = ("denoise", "denoise30", "denoise50")
# Sub-folders that hold the ground truth in common distributions of the SR sets (BasicSR's
# archives put it in GTmod12/, others in HR/ or original/), tried after the set's folder itself.
_HR_SUBFOLDERS = ("HR", "GTmod12", "original")


class DatasetError(ValueError):
    """A test set cannot be found or is incomplete; the message says where to put it."""


@dataclass(frozen=True)
class PairLayout:
    """Input/target pairs: two file name templates relative to the set's folder, `{id}` shared."""

    lq: str
    gt: str

    @classmethod
    def parse(cls, text: str) -> "PairLayout":
        """'LQ_TEMPLATE,GT_TEMPLATE', e.g. 'input/rain-{id}.png,target/norain-{id}.png'."""
        parts = [part.strip() for part in text.split(",")]
        if len(parts) != 2:
            raise DatasetError(
                f"--pairs takes two templates separated by a comma, got {text!r}; "
                "e.g. --pairs 'input/rain-{id}.png,target/norain-{id}.png'"
            )
        layout = cls(*parts)
        for template in parts:
            if Path(template).name.count(ID_FIELD) != 1 or template.count(ID_FIELD) != 1:
                raise DatasetError(
                    f"pair template {template!r} must contain {ID_FIELD} exactly once, in the file name"
                )
        return layout

    def folders_exist(self, folder: Path) -> bool:
        return all((folder / Path(t).parent).is_dir() for t in (self.lq, self.gt))

    def match(self, folder: Path) -> tuple[list[tuple[str, Path, Path]], list[Path]]:
        """(id, input, target) for every pair, sorted by id, and the files left without a partner."""
        lq, gt = _files_by_id(folder, self.lq), _files_by_id(folder, self.gt)
        common = sorted(lq.keys() & gt.keys(), key=_id_order)
        pairs = [(str(key), lq[key], gt[key]) for key in common]
        unmatched = sorted([lq[k] for k in lq.keys() - gt.keys()] + [gt[k] for k in gt.keys() - lq.keys()])
        return pairs, unmatched


def _files_by_id(folder: Path, template: str) -> dict[int | str, Path]:
    """The files of `folder/template`'s folder whose name fits the template, keyed by their id."""
    directory = folder / Path(template).parent
    head, tail = Path(template).name.split(ID_FIELD)
    pattern = re.compile(re.escape(head) + "(.+)" + re.escape(tail))
    found: dict[int | str, Path] = {}
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        match = pattern.fullmatch(path.name)
        if match and is_image_file(path):
            text = match.group(1)
            found[int(text) if text.isdigit() else text] = path
    return found


def _id_order(key: int | str) -> tuple[int, int | str]:
    return (0, key) if isinstance(key, int) else (1, key)


@dataclass(frozen=True)
class DatasetSpec:
    """One standard set: the tasks it is the benchmark for, its official source and its layout."""

    name: str
    tasks: tuple[str, ...]
    count: int  # images (clean sets) or pairs (pair sets) in the official release
    url: str
    description: str
    pairs: PairLayout | None = None

    def layout(self) -> str:
        if self.pairs is None:
            return f"the {self.count} ground-truth images directly in the folder (or in HR/)"
        return f"{self.count} pairs {self.pairs.lq} / {self.pairs.gt}"


_RAIN_PAIRS = PairLayout("input/rain-{id}.png", "target/norain-{id}.png")

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("Set5", _SR_TASKS, 5, "https://people.rennes.inria.fr/Aline.Roumy/results/SR_BMVC12.html",
                    "Bevilacqua et al. 2012; SR"),
        DatasetSpec("Set14", _SR_TASKS, 14, "https://sites.google.com/site/romanzeyde/research-interests",
                    "Zeyde et al. 2010; SR; bridge.png is grayscale"),
        DatasetSpec("B100", _SR_TASKS, 100,
                    "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/bsds/",
                    "the 100 BSDS300 test images (BSD100); SR"),
        DatasetSpec("Urban100", _SR_TASKS + _COLOR_DENOISE_TASKS, 100, "https://github.com/jbhuang0604/SelfExSR",
                    "Huang et al. 2015; SR and color denoising"),
        DatasetSpec("Manga109", _SR_TASKS, 109, "http://www.manga109.org/en/",
                    "Matsui et al. 2017; SR; the images are given on request"),
        DatasetSpec("CBSD68", _COLOR_DENOISE_TASKS, 68, "https://github.com/clausmichele/CBSD68-dataset",
                    "color version of the BSD68 test images; color denoising"),
        DatasetSpec("Kodak24", _COLOR_DENOISE_TASKS, 24, "https://r0k.us/graphics/kodak/",
                    "Kodak PhotoCD images (24); color denoising"),
        DatasetSpec("McMaster", _COLOR_DENOISE_TASKS, 18,
                    "https://www4.comp.polyu.edu.hk/~cslzhang/CDM_Dataset.htm",
                    "Zhang et al. 2011 (18 TIFFs, 500 x 500); color denoising"),
        DatasetSpec("Set12", _COLOR_DENOISE_TASKS, 12, "https://github.com/cszn/DnCNN/tree/master/testsets",
                    "grayscale denoising (DnCNN's test set)"),
        DatasetSpec("BSD68", _COLOR_DENOISE_TASKS, 68, "https://github.com/cszn/DnCNN/tree/master/testsets",
                    "grayscale denoising (DnCNN's test set)"),
        DatasetSpec("Rain100L", ("derain",), 100, "https://www.icst.pku.edu.cn/struct/Projects/joint_rain_removal.html",
                    "Yang et al. 2017, light synthetic rain", _RAIN_PAIRS),
        DatasetSpec("Rain100H", ("derain-heavy",), 100,
                    "https://www.icst.pku.edu.cn/struct/Projects/joint_rain_removal.html",
                    "Yang et al. 2017, heavy synthetic rain", _RAIN_PAIRS),
        DatasetSpec("LOL", ("lowlight",), 15, "https://daooshee.github.io/BMVC2018website/",
                    "Wei et al. 2018, the 15 eval pairs (low/, high/)", PairLayout("low/{id}.png", "high/{id}.png")),
    )
}


@dataclass(frozen=True)
class BenchImage:
    """One test image: its ground truth and, in pair sets, its given input."""

    name: str
    gt: Path
    lq: Path | None = None  # None: the task's degradation makes the input from `gt`


@dataclass(frozen=True)
class Dataset:
    name: str
    folder: Path
    images: tuple[BenchImage, ...]
    spec: DatasetSpec | None = None  # None for a custom folder

    @property
    def paired(self) -> bool:
        return any(image.lq is not None for image in self.images)


def data_roots(data_dir: Path | None = None) -> list[tuple[Path, str]]:
    """The folders searched for sets, in order, each with how the user chose it."""
    roots = [] if data_dir is None else [(Path(data_dir).expanduser(), "--data")]
    if os.environ.get("ADAPTIR_DATA"):
        roots.append((Path(os.environ["ADAPTIR_DATA"]).expanduser(), "$ADAPTIR_DATA"))
    roots.append((home() / "data", "the cache"))
    return roots


def get_spec(name: str) -> DatasetSpec | None:
    """The registry entry for `name`, case-insensitively (users type set5 as often as Set5)."""
    return {key.lower(): spec for key, spec in DATASETS.items()}.get(name.lower())


def find_dataset(name_or_path: str, data_dir: Path | None = None, pairs: PairLayout | None = None) -> Dataset:
    """A registry set by name (searched in the data roots) or a custom set given by its folder.

    `pairs` makes a custom folder a pair set (registry sets have their own layout); without it,
    a folder laid out like a registry pair set (input/ + target/, low/ + high/) is read as one,
    and any other folder as clean images.
    """
    spec = get_spec(name_or_path)
    if spec is not None:
        return _find_registered(spec, data_dir)
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        known = ", ".join(DATASETS)
        raise DatasetError(
            f"{name_or_path!r} is neither a known test set ({known}) nor a folder; "
            "pass a set name or the path of a folder of images"
        )
    if pairs is None:
        pairs = next((s.pairs for s in DATASETS.values() if s.pairs and s.pairs.folders_exist(folder)), None)
    if pairs is not None:
        images = _read_pairs(folder, pairs, folder.name)
    else:
        images = _read_clean(folder)
    if not images:
        raise DatasetError(f"no images found in {folder}; pass a folder of images (png, jpg, tif, ...) or --pairs")
    return Dataset(folder.name, folder, images)


def _find_registered(spec: DatasetSpec, data_dir: Path | None) -> Dataset:
    roots = data_roots(data_dir)
    for root, _ in roots:
        folder = _child(root, spec.name)
        if folder is not None:
            return Dataset(spec.name, folder, _check_complete(spec, folder), spec)
    searched = "; ".join(f"{root} ({how})" for root, how in roots)
    raise DatasetError(
        f"test set {spec.name} not found (searched {searched}). Download it from {spec.url} and put "
        f"{spec.layout()} in {roots[0][0] / spec.name}, or pass --data DIR / set ADAPTIR_DATA to the folder "
        f"holding {spec.name}/"
    )


def _child(root: Path, name: str) -> Path | None:
    """root/name, matching the name case-insensitively when the exact spelling is absent."""
    exact = root / name
    if exact.is_dir():
        return exact
    if not root.is_dir():
        return None
    return next((p for p in sorted(root.iterdir()) if p.is_dir() and p.name.lower() == name.lower()), None)


def _check_complete(spec: DatasetSpec, folder: Path) -> tuple[BenchImage, ...]:
    if spec.pairs is not None:
        images = _read_pairs(folder, spec.pairs, spec.name)
    else:
        images = _read_clean(folder)
    if len(images) != spec.count:
        what = "pairs" if spec.pairs else "images"
        advice = (
            f"download the missing ones from {spec.url}" if len(images) < spec.count
            else "leave only the set's files there, or bench the folder as a custom set with --dataset PATH"
        )
        raise DatasetError(
            f"{folder} holds {len(images)} {what} but {spec.name} has {spec.count} ({spec.layout()}); {advice}"
        )
    return images


def _read_clean(folder: Path) -> tuple[BenchImage, ...]:
    for candidate in (folder, *(folder / sub for sub in _HR_SUBFOLDERS)):
        files = sorted(p for p in candidate.iterdir() if is_image_file(p)) if candidate.is_dir() else []
        if files:
            return tuple(BenchImage(p.name, p) for p in files)
    return ()


def _read_pairs(folder: Path, layout: PairLayout, name: str) -> tuple[BenchImage, ...]:
    pairs, unmatched = layout.match(folder)
    if unmatched:
        listed = ", ".join(str(p.relative_to(folder)) for p in unmatched[:5])
        more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
        raise DatasetError(
            f"{name}: {len(unmatched)} file(s) in {folder} have no partner under {layout.lq} / {layout.gt}: "
            f"{listed}{more}; add the missing files or remove these"
        )
    return tuple(BenchImage(gt.name, gt, lq) for _, lq, gt in pairs)
