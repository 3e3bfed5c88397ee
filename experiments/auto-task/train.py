"""Train the `--task auto` classifier shipped in adaptir_cli/weights/bundled/auto-task.safetensors.

    OMP_NUM_THREADS=1 python experiments/auto-task/train.py            # ../shared, or $ADAPTIR_SHARED

Training inputs are crops of BSD400 (minus the Rain100L backgrounds, which the evaluation uses
as Rain100L's rain inputs, and minus every ninth image, held out for evaluate.py) degraded by
adaptir_cli.data.degradations as each class says (auto_task.synthesise). A few minutes on one
CPU core. The log (settings, loss per epoch, seconds) goes to experiments/auto-task/logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from adaptir_cli.auto_task import BLOCK, CROP, LABELS, TaskClassifier, save_classifier, synthesise
from adaptir_cli.bases.loading import sha256_file
from adaptir_cli.imaging.reading import read_image
from adaptir_cli.training.data import list_images, read_name_list

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EXCLUDE = REPO / "experiments" / "default" / "rain100l_backgrounds.txt"
HELD_OUT_EVERY = 9
# Labels whose inputs may be down-sampled need the whole image (BSD400 at x4 is 120 x 80);
# the others are degraded on a region, which is all a crop sees and costs a tenth of the time.
WHOLE_IMAGE = {"clean", "lr4-noise30", "lr4-jpeg30"}
REGION = 128


def shared_root() -> Path:
    return Path(os.environ.get("ADAPTIR_SHARED", REPO.parent / "shared")).resolve()


def split(shared: Path) -> tuple[list[Path], list[Path]]:
    """(training, held-out) images of BSD400 minus the Rain100L backgrounds; every ninth is held out."""
    images = list_images(shared / "data" / "train" / "BSD400", read_name_list(EXCLUDE))
    held_out = images[::HELD_OUT_EVERY]
    return [path for path in images if path not in held_out], held_out


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator, step: int = 1) -> np.ndarray:
    """A size x size crop whose corner is a multiple of `step`."""
    top = step * int(rng.integers((image.shape[0] - size) // step + 1))
    left = step * int(rng.integers((image.shape[1] - size) // step + 1))
    return image[top : top + size, left : left + size]


def make_crops(files: list[Path], variants: int, crops: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """uint8 crops (N, CROP, CROP, 3) and their class indices."""
    images, labels = [], []
    for path in files:
        clean = read_image(path).rgb
        for index, label in enumerate(LABELS):
            for _ in range(variants):
                source = clean if label in WHOLE_IMAGE else random_crop(clean, REGION, rng)
                degraded = synthesise(source, label, rng)
                for _ in range(crops):
                    # On the JPEG block grid, as auto_task.crop_corners takes them.
                    images.append(np.round(random_crop(degraded, CROP, rng, BLOCK) * 255).astype(np.uint8))
                    labels.append(index)
    return np.stack(images), np.array(labels)


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal and vertical flips of the whole batch. Not 90-degree turns: they would
    make rain streaks horizontal, which no rain input has."""
    if torch.rand(1, generator=generator) < 0.5:
        batch = batch.flip(-1)
    if torch.rand(1, generator=generator) < 0.5:
        batch = batch.flip(-2)
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "adaptir_cli" / "weights" / "bundled" / "auto-task.safetensors")
    parser.add_argument("--log", type=Path, default=HERE / "logs" / "train.json")
    parser.add_argument("--variants", type=int, default=3, help="degraded versions of each image per class")
    parser.add_argument("--crops", type=int, default=2, help="crops taken from each degraded version")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    train_files, held_out = split(shared_root())
    images, labels = make_crops(train_files, args.variants, args.crops, rng)
    data_seconds = time.perf_counter() - start
    print(f"{len(images)} crops from {len(train_files)} images in {data_seconds:.0f} s", file=sys.stderr)

    model = TaskClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (len(images) // args.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
    targets = torch.from_numpy(labels)
    history = []
    for epoch in range(args.epochs):
        order = torch.randperm(len(images), generator=generator)
        losses, correct = [], 0
        for first in range(0, len(order) - args.batch + 1, args.batch):
            chosen = order[first : first + args.batch]
            batch = augment(pixels[chosen].float() / 255.0, generator)
            logits = model(batch)
            loss = torch.nn.functional.cross_entropy(logits, targets[chosen])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            correct += int((logits.argmax(1) == targets[chosen]).sum())
        row = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4),
               "train_crop_accuracy": round(correct / (len(losses) * args.batch), 4),
               "seconds": round(time.perf_counter() - start, 1)}
        history.append(row)
        print(json.dumps(row), file=sys.stderr)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    settings["out"] = os.path.relpath(args.out, REPO)
    settings["log"] = os.path.relpath(args.log, REPO)
    training = {
        "script": "experiments/auto-task/train.py", "data": "BSD400 minus experiments/default/rain100l_backgrounds.txt",
        "train_images": len(train_files), "crops": len(images), "steps": steps, "seed": args.seed,
    }
    save_classifier(args.out, model.eval(), training)
    log = {
        "settings": settings, **training, "labels": list(LABELS),
        "parameters": sum(p.numel() for p in model.parameters()),
        "held_out": [path.name for path in held_out], "history": history,
        "data_seconds": round(data_seconds, 1), "seconds": round(time.perf_counter() - start, 1),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
        "weights": {"size": args.out.stat().st_size, "sha256": sha256_file(args.out)},
    }
    args.log.parent.mkdir(parents=True, exist_ok=True)
    args.log.write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({log['weights']['size']} bytes, sha256 {log['weights']['sha256']})", file=sys.stderr)


if __name__ == "__main__":
    main()
