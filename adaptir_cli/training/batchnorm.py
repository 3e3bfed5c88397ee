"""BatchNorm over the global batch of a data-parallel run (`torchrun --nproc-per-node N`).

Each process trains on its slice of the global batch (training/sampling.py) and DDP averages the
gradients of the trainable tensors, so N processes with `--batch b` follow the run of one process
with batch N*b. BatchNorm needs care for that equality to hold. A plain BatchNorm normalises with
the statistics of its own process's b samples: the function trained, and the statistics kept,
would both differ from one process's. PyTorch's SyncBatchNorm fixes this on GPUs only, so
trainable BatchNorm layers (AdaptIR's down-projection) are swapped for `GlobalBatchNorm2d`, which
all-reduces the batch sums in a differentiable way on any backend: every process normalises with,
and keeps running statistics of, the whole global batch.

Nothing in it reads a device tensor on the host, or builds one from host values: on CUDA a layer
costs two NCCL all-reduces queued on the stream (forward and backward), never a wait for the GPU.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) that gradients flow through: the gradient of a sum over processes with
    respect to one process's term is the sum of every process's incoming gradient."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over the global batch of all processes while training; plain BatchNorm otherwise.

    Same parameters, buffers and state-dict keys as nn.BatchNorm2d. Batch sums are all-reduced
    with an autograd-aware all-reduce, so the gradient also flows through the other processes'
    use of this process's samples, exactly as in one process. Sums are taken in float64: the
    variance is E[x^2] - E[x]^2, which float32 would lose to cancellation.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        wide = x.double()
        # The count is filled on the device: new_tensor([n]) would copy from the host, a CUDA sync.
        local = torch.cat([
            wide.sum(dim=(0, 2, 3)),
            (wide * wide).sum(dim=(0, 2, 3)),
            torch.full((1,), x.numel() // channels, dtype=torch.float64, device=x.device),
        ])
        total = _SumOverProcesses.apply(local)
        count = total[-1]
        mean = total[:channels] / count
        var = total[channels : 2 * channels] / count - mean * mean
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                tracked = self.num_batches_tracked
                assert tracked is not None, "track_running_stats keeps a batch count"
                tracked.add_(1)
                # Cumulative averaging (momentum None) as a tensor: float(tracked) would wait for the GPU.
                momentum = self.momentum if self.momentum is not None else tracked.reciprocal().to(self.running_mean.dtype)
                # Running variance is unbiased, as nn.BatchNorm keeps it; clamp, not max(): on the device.
                unbiased = var * count / (count - 1.0).clamp(min=1.0)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        scale = torch.rsqrt(var + self.eps).to(x.dtype)
        out = (x - mean.to(x.dtype)[None, :, None, None]) * scale[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def use_global_batchnorm(module: nn.Module) -> int:
    """Swap every trainable BatchNorm2d of `module` for a GlobalBatchNorm2d; returns how many.

    Frozen ones (a base's own, in eval mode) keep normalising with their running statistics and
    stay as they are. Call before building the optimizer: the swapped layers get new Parameters.
    """
    swapped = 0
    for name, child in list(module.named_modules()):
        if type(child) is not nn.BatchNorm2d or child.weight is None or not child.weight.requires_grad:
            continue
        replacement = GlobalBatchNorm2d(
            child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
        ).to(device=child.weight.device, dtype=child.weight.dtype)
        replacement.load_state_dict(child.state_dict())
        replacement.train(child.training)
        parent, _, attribute = name.rpartition(".")
        setattr(module.get_submodule(parent), attribute, replacement)
        swapped += 1
    return swapped

