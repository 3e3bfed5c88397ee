"""Validation during training: PSNR/SSIM per task, measured as the benchmark measures them.

Outputs are clipped and quantised to uint8 and compared on the task's channel with its border
crop (bench/protocol.py), so a validation PSNR reads like a bench number on the same images.
Under torchrun every process measures its share of the images and the sums are all-reduced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from adaptir_cli.bases.descriptor import BaseDescriptor
from adaptir_cli.bench.protocol import default_channel_and_crop
from adaptir_cli.imaging.tensors import to_numpy, to_tensor
from adaptir_cli.imaging.tiling import run_tiled
from adaptir_cli.metrics import psnr, ssim, to_uint8
from adaptir_cli.runtime import Precision, autocast
from adaptir_cli.tasks import get_task
from adaptir_cli.distributed import Distributed, all_reduce_sum
from adaptir_cli.training.sampling import ValidationPair

# SSIM's 11 px window needs more than this many pixels per side after the border crop.
_SSIM_MIN_SIDE = 11


@dataclass(frozen=True)
class ValidationSet:
    task: str
    head_index: int
    scale: int
    pairs: list[ValidationPair]


Forward = Callable[[torch.Tensor, int], torch.Tensor]


@torch.no_grad()
def evaluate(
    forward: Forward,
    sets: list[ValidationSet],
    descriptor: BaseDescriptor,
    device: torch.device,
    precision: Precision,
    context: Distributed,
) -> dict[str, dict[str, float]]:
    """{task: {"psnr": mean dB, "ssim": mean (when the images allow it)}} over every set.

    `forward(x, head_index)` maps (n, 3, h, w) in [0, 1] to the restored batch; the caller puts
    the model in eval mode. Whole images are run in one pass except on fixed-size bases (IPT),
    which are tiled as restore tiles them.
    """
    results = {}
    for validation in sets:
        channel, crop = default_channel_and_crop(get_task(validation.task))
        # psnr sum, ssim sum, images, images large enough for SSIM: summed over processes.
        sums = torch.zeros(4, dtype=torch.float64)
        for pair in validation.pairs[context.rank :: context.world]:
            image = to_tensor(pair.lq).to(device)

            def run(tiles: torch.Tensor) -> torch.Tensor:
                with autocast(device, precision):
                    return forward(tiles, validation.head_index).float()

            output = run_tiled(
                run, image, scale=validation.scale, tile=0,
                overlap=descriptor.tile_overlap if descriptor.fixed_size else 0,
                multiple=descriptor.size_multiple, fixed_size=descriptor.fixed_size, min_size=descriptor.min_size,
            )
            restored = to_uint8(to_numpy(output.clamp(0, 1).cpu()))
            reference = to_uint8(pair.gt)
            y = channel == "y"
            sums[0] += psnr(restored, reference, crop_border=crop, test_y_channel=y)
            sums[2] += 1
            if min(reference.shape[:2]) - 2 * crop >= _SSIM_MIN_SIDE:
                sums[1] += ssim(restored, reference, crop_border=crop, test_y_channel=y)
                sums[3] += 1
        psnr_sum, ssim_sum, count, ssim_count = all_reduce_sum(sums, context).tolist()
        if count:
            metrics = {"psnr": psnr_sum / count}
            if ssim_count:
                metrics["ssim"] = ssim_sum / ssim_count
            results[validation.task] = metrics
    return results


def mean_psnr(results: dict[str, dict[str, float]]) -> float:
    """The one number "best @ step" tracks: PSNR averaged over the validated tasks."""
    return sum(metrics["psnr"] for metrics in results.values()) / len(results)
