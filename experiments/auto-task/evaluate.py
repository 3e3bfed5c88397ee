"""Measure the `--task auto` classifier: held-out BSD400 images and the test sets in ../shared.

    OMP_NUM_THREADS=1 python experiments/auto-task/evaluate.py --docs docs/auto-task.md

Every image is classified whole, as `adaptir restore --task auto` does (auto_task.classify).
Writes experiments/auto-task/results.json and, with --docs, the tables between the
`<!-- auto-task results -->` markers of that page (numbers are never typed into the docs).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from adaptir_cli import markdown
from adaptir_cli.auto_task import LABELS, TASK_OF_LABEL, TaskClassifier, classify, read_classifier, synthesise
from adaptir_cli.data.degradations import get_degradation, jpeg
from adaptir_cli.imaging.reading import read_image
from adaptir_cli.metrics import to_uint8
from adaptir_cli.training.data import list_images

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import HERE, REPO, shared_root, split  # noqa: E402  (the same split as training)

BEGIN, END = "<!-- auto-task results -->", "<!-- /auto-task results -->"
HELD_OUT_VARIANTS = 2


def _quantised(image: np.ndarray) -> np.ndarray:
    return to_uint8(image).astype(np.float32) / np.float32(255.0)


def _images(folder: Path) -> Iterator[np.ndarray]:
    for path in list_images(folder):
        yield read_image(path).rgb


def _degraded(folder: Path, task: str, seed: int) -> Callable[[], Iterator[np.ndarray]]:
    """The images of `folder` through the degradation of `task` (fixed seed), as 8-bit files would hold them."""
    def images() -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        for image in _images(folder):
            yield _quantised(get_degradation(task)(image, rng))
    return images


def test_sets(data: Path) -> list[tuple[str, str, Callable[[], Iterator[np.ndarray]]]]:
    """(name, expected class, the images) of each real or synthesised test set."""
    test = data / "test"
    sets: list[tuple[str, str, Callable[[], Iterator[np.ndarray]]]] = [
        ("Rain100L inputs (real rain)", "derain", lambda: _images(test / "Rain100L" / "input")),
        ("CBSD68 clean", "clean", lambda: _images(test / "CBSD68")),
        ("Set5 LR x4 (MATLAB bicubic)", "clean", lambda: _images(data / "golden" / "Set5_bicubic" / "LR_x4")),
        ("Set14 LR x4 (bicubic)", "clean", _degraded(test / "Set14", "sr4", 0)),
    ]
    for sigma in (15, 25, 50):
        sets.append((f"CBSD68 noise sigma {sigma}", "denoise", _degraded(test / "CBSD68", f"denoise{sigma}", sigma)))
    sets += [
        ("McMaster noise sigma 25", "denoise", _degraded(test / "McMaster", "denoise25", 25)),
        ("CBSD68 synthetic low light", "lowlight", _degraded(test / "CBSD68", "lowlight", 1)),
        ("CBSD68 synthetic heavy rain", "derain-heavy", _degraded(test / "CBSD68", "derain-heavy", 2)),
        ("CBSD68 synthetic light rain", "derain", _degraded(test / "CBSD68", "derain", 3)),
    ]
    for task in ("lr4-noise30", "lr4-jpeg30"):
        for name in ("Set5", "Set14"):
            sets.append((f"{name} {task}", task, _degraded(test / name, task, 4)))
    return sets


def other_sets(data: Path) -> list[tuple[str, Callable[[], Iterator[np.ndarray]]]]:
    """Inputs of no class (full-size JPEG): where they go, not scored."""
    def compressed(quality: int) -> Callable[[], Iterator[np.ndarray]]:
        return lambda: (jpeg(image, quality) for image in _images(data / "test" / "CBSD68"))
    return [(f"CBSD68 JPEG quality {quality}, full size", compressed(quality)) for quality in (30, 75, 90)]


def held_out_confusion(model: TaskClassifier, files: list[Path]) -> dict[str, dict[str, int]]:
    """true class -> predicted class -> count, over HELD_OUT_VARIANTS inputs per image and class."""
    rng = np.random.default_rng(1234)
    confusion = {label: dict.fromkeys(LABELS, 0) for label in LABELS}
    for path in files:
        clean = read_image(path).rgb
        for label in LABELS:
            for _ in range(HELD_OUT_VARIANTS):
                confusion[label][classify(synthesise(clean, label, rng), model).label] += 1
    return confusion


def results_markdown(results: dict) -> str:
    confusion = results["held_out"]["confusion"]
    lines = [
        f"Held-out split: {results['held_out']['images']} BSD400 images never seen in training, "
        f"{HELD_OUT_VARIANTS} random inputs per image and class: **{results['held_out']['accuracy']:.1%}** "
        "correct. Rows: the degradation applied; columns: the class chosen.",
        "",
    ]
    lines += markdown.table(
        ["applied \\ chosen", *LABELS, "correct"],
        [[label, *(confusion[label][c] for c in LABELS), f"{confusion[label][label] / sum(confusion[label].values()):.0%}"]
         for label in LABELS],
        "l" + "r" * (len(LABELS) + 1),
    )
    lines += [
        "",
        f"Test sets (no image of them in training): **{results['tests_accuracy']:.1%}** of "
        f"{results['tests_images']} images correct.",
        "",
    ]
    tests = []
    for row in results["tests"]:
        wrong = ", ".join(f"{label} {count}" for label, count in row["chosen"].items() if label != row["expected"])
        tests.append([row["set"], row["images"], f"{row['expected']} ({TASK_OF_LABEL[row['expected']]})",
                      f"{row['correct'] / row['images']:.0%}", wrong or "-"])
    lines += markdown.table(["set", "images", "expected (task)", "correct", "chosen instead"], tests, "lrlrl")
    lines += ["", "Inputs of no class, not scored: where they go.", ""]
    others = [[row["set"], row["images"], ", ".join(f"{label} {count}" for label, count in row["chosen"].items())]
              for row in results["others"]]
    lines += markdown.table(["set", "images", "chosen"], others, "lrl")
    return "\n".join(lines)


def write_docs(page: Path, table: str) -> None:
    text = page.read_text(encoding="utf-8")
    head, found, rest = text.partition(BEGIN)
    _, closed, tail = rest.partition(END)
    if not (found and closed):
        raise SystemExit(f"{page} lacks the {BEGIN} ... {END} markers to write the tables between")
    page.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=REPO / "adaptir_cli" / "weights" / "bundled" / "auto-task.safetensors")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--docs", type=Path, help="a page with the results markers to fill in")
    args = parser.parse_args()

    model = read_classifier(args.weights)
    shared = shared_root()
    _, held_out = split(shared)
    confusion = held_out_confusion(model, held_out)
    total = sum(sum(row.values()) for row in confusion.values())
    tests = []
    for name, expected, images in test_sets(shared / "data"):
        chosen = Counter(classify(image, model).label for image in images())
        tests.append({"set": name, "expected": expected, "images": sum(chosen.values()),
                      "correct": chosen[expected], "chosen": dict(chosen.most_common())})
        print(json.dumps(tests[-1]), file=sys.stderr)
    others = []
    for name, images in other_sets(shared / "data"):
        chosen = Counter(classify(image, model).label for image in images())
        others.append({"set": name, "images": sum(chosen.values()), "chosen": dict(chosen.most_common())})
    results = {
        "weights": str(args.weights.relative_to(REPO)) if args.weights.is_relative_to(REPO) else str(args.weights),
        "held_out": {"images": len(held_out), "variants": HELD_OUT_VARIANTS, "confusion": confusion,
                     "accuracy": sum(confusion[label][label] for label in LABELS) / total},
        "tests": tests,
        "tests_images": sum(row["images"] for row in tests),
        "tests_accuracy": sum(row["correct"] for row in tests) / sum(row["images"] for row in tests),
        "others": others,
    }
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    table = results_markdown(results)
    print(table)
    if args.docs:
        write_docs(args.docs, table)


if __name__ == "__main__":
    main()
