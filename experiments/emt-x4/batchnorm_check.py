"""Held-out PSNR of an AdaptIR adapter with its BatchNorm layers as trained (running statistics) and
with each image's own statistics: a large gap means the running statistics do not describe what
the layers see at inference.

    python experiments/emt-x4/batchnorm_check.py ADAPTER.safetensors --task lr4-noise30 --gt ../shared/data/train/BSD400

The held-out images are the ones `experiments/emt-x4/adapters.sh` validates on (2 % of BSD400
minus the Rain100L backgrounds, seed 0, centred 48 px input crops), scored on Y with crop 4.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adaptir_cli.adapters import apply_adapter, read_adapter
from adaptir_cli.metrics import psnr, to_uint8
from adaptir_cli.training.data import DataOptions, prepare_images
from adaptir_cli.training.inputs import check_head, task_data
from adaptir_cli.weights.resolve import load_base

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapter", type=Path)
    parser.add_argument("--task", default="lr4-noise30")
    parser.add_argument("--base", default="emt-x4")
    parser.add_argument("--gt", type=Path, required=True)
    args = parser.parse_args()

    base = load_base(args.base)
    apply_adapter(base, read_adapter(args.adapter))
    data = DataOptions(gt=args.gt, exclude=HERE.parent / "default/rain100l_backgrounds.txt", val_fraction=0.02, val_crop=48)
    head = check_head(base, args.task)
    _, validation = task_data(args.task, head, prepare_images(data, False, 0, 1), args.task, 0, 48)
    assert validation is not None
    model, scale = base.module.eval(), base.descriptor.pixel_range

    def scores() -> list[float]:
        values = []
        with torch.no_grad():
            for pair in validation.pairs:
                x = torch.from_numpy(pair.lq).permute(2, 0, 1)[None]
                out = (model(x * scale, head) / scale)[0].permute(1, 2, 0).numpy()
                values.append(psnr(to_uint8(np.nan_to_num(out)), to_uint8(pair.gt), crop_border=4, test_y_channel=True))
        return values

    running = scores()
    norms = [layer for name, layer in model.named_modules() if isinstance(layer, nn.BatchNorm2d) and ".adapter." in f"{name}."]
    for layer in norms:
        layer.train()
        layer.momentum = 0.0  # normalise with the image's statistics, leave the stored ones alone
    own = scores()
    print(f"{len(norms)} adapter BatchNorm layers, {len(running)} held-out images")
    print("running statistics: " + " ".join(f"{v:.2f}" for v in running) + f"  mean {np.mean(running):.2f}")
    print("each image's own:   " + " ".join(f"{v:.2f}" for v in own) + f"  mean {np.mean(own):.2f}")


if __name__ == "__main__":
    main()
