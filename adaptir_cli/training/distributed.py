"""One training run over several processes (`torchrun --nproc-per-node N`): setup and collectives.

Each process trains on its slice of the global batch (training/sampling.py) and DDP averages the
gradients of the trainable tensors, so N processes with `--batch b` follow the run of one process
with batch N*b. Backends: NCCL between GPUs, gloo between CPU processes.

BatchNorm needs care for that equality to hold. A plain BatchNorm normalises with the statistics
of its own process's b samples, and DDP would then copy rank 0's running statistics over the
others at every forward: the function trained, and the statistics kept, would both differ from
one process's. PyTorch's SyncBatchNorm fixes this on GPUs only, so trainable BatchNorm layers
(AdaptIR's down-projection) are swapped for `GlobalBatchNorm2d`, which all-reduces the batch
sums in a differentiable way on any backend: every process normalises with, and keeps running
statistics of, the whole global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from adaptir_cli.runtime import RuntimeChoiceError, resolve_device


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: its rank among `world` processes and its device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Only the main process writes files and shows progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device_spec: str = "auto") -> Distributed:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, ...), or run alone without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(0, 1, 0, resolve_device(device_spec))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    spec = device_spec.strip().lower()
    if spec.startswith("cuda:"):
        raise RuntimeChoiceError("under torchrun each process uses GPU LOCAL_RANK; pass --device cuda (or auto)")
    device = resolve_device(spec)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return Distributed(rank, world, local_rank, device)


def shutdown(context: Distributed) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, context: Distributed) -> torch.Tensor:
    """`tensor` summed over the processes, on the CPU (a copy of it when alone).

    The sum travels on the process's device: NCCL cannot reduce CPU tensors.
    """
    if not context.active:
        return tensor.detach().cpu().clone()
    reduced = tensor.detach().to(context.device, copy=True)
    dist.all_reduce(reduced)
    return reduced.cpu()


def barrier(context: Distributed) -> None:
    if context.active:
        dist.barrier()


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
        local = torch.cat([
            wide.sum(dim=(0, 2, 3)),
            (wide * wide).sum(dim=(0, 2, 3)),
            wide.new_tensor([x.numel() // channels]),
        ])
        total = _SumOverProcesses.apply(local)
        count = total[-1]
        mean = total[:channels] / count
        var = total[channels : 2 * channels] / count - mean * mean
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                # Running variance is unbiased, as nn.BatchNorm keeps it.
                unbiased = var * count / max(float(count) - 1.0, 1.0)
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

