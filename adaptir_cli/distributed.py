"""Several processes under `torchrun`: joining the group, sharing work and gathering results.

`finetune` and `pretrain` train data-parallel (training/loop.py); `restore` and `bench` share
their images among the processes and gather the results on the first one. Backends: NCCL between
GPUs (process r uses GPU LOCAL_RANK), gloo between CPU processes. Multi-node runs need nothing
more than torchrun's rendezvous (`--nnodes`, `--rdzv-endpoint`): every rank reads RANK and
WORLD_SIZE from the environment torchrun sets.

Alone (no torchrun, or WORLD_SIZE=1) every function here works without a process group, so the
commands call them unconditionally.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from adaptir_cli.runtime import RuntimeChoiceError, resolve_device

T = TypeVar("T")

# Sets the CPU threads of each process under torchrun (see `threads_per_process`).
THREADS_VARIABLE = "ADAPTIR_THREADS"


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: its rank among `world` processes and its device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    # A gloo group beside an NCCL one, for small host-side flags (a stop request) that must not
    # wait for the GPU: an NCCL collective on a device tensor read back on the host would.
    # None: the default group serves (gloo already, or alone).
    control: Any = field(default=None, compare=False, repr=False)

    @property
    def main(self) -> bool:
        """Only the main process writes shared files, shows progress and prints summaries."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def launched_world() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device_spec: str = "auto") -> Distributed:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, ...), or run alone without it."""
    world = launched_world()
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
    else:
        torch.set_num_threads(threads_per_process())
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    # Every rank calls setup, so every rank creates the group, as new_group requires.
    control = dist.new_group(backend="gloo") if device.type == "cuda" else None
    return Distributed(rank, world, local_rank, device, control)


@contextmanager
def joined(device_spec: str = "auto") -> Iterator[Distributed]:
    """`setup` for one library call: a group this call joins is left when the call ends; a group
    the caller set up before is kept, as are a lone process's settings."""
    ours = launched_world() > 1 and not dist.is_initialized()
    context = setup(device_spec)
    try:
        yield context
    finally:
        if ours:
            shutdown(context)


def threads_per_process(environ: dict[str, str] | None = None, cores: int | None = None) -> int:
    """CPU threads for each of the LOCAL_WORLD_SIZE processes on this machine: cores / processes.

    torchrun sets OMP_NUM_THREADS=1 for its workers when the user did not set it, which leaves
    all but N cores idle; that "1" cannot be told from a user's own, so it is replaced by
    cores / N. Any other OMP_NUM_THREADS value is the user's and is kept; ADAPTIR_THREADS
    overrides both (ADAPTIR_THREADS=1 for one thread each).
    """
    environ = dict(os.environ) if environ is None else environ
    if environ.get(THREADS_VARIABLE, "").strip():
        try:
            return max(1, int(environ[THREADS_VARIABLE]))
        except ValueError:
            raise RuntimeChoiceError(f"{THREADS_VARIABLE} must be a whole number, got {environ[THREADS_VARIABLE]!r}") from None
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 1:
        return int(omp)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(1, local))


def shutdown(context: Distributed) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, context: Distributed) -> torch.Tensor:
    """`tensor` summed over the processes, on the CPU (a copy of it when alone).

    The sum travels on the process's device: NCCL cannot reduce CPU tensors. Reading it back
    waits for the device, so callers do it at intervals, not every step.
    """
    if not context.active:
        return tensor.detach().cpu().clone()
    reduced = tensor.detach().to(context.device, copy=True)
    dist.all_reduce(reduced)
    return reduced.cpu()


def any_process(flag: bool, context: Distributed) -> bool:
    """Whether `flag` is true in any process: a host-side collective that never waits for a GPU."""
    if not context.active:
        return flag
    count = torch.tensor([int(flag)], dtype=torch.int64)
    dist.all_reduce(count, group=context.control)
    return bool(count[0])


def barrier(context: Distributed) -> None:
    if context.active:
        dist.barrier(group=context.control)


def share(items: Sequence[T], context: Distributed) -> list[T]:
    """This process's share of `items`: every world-th one from its rank on.

    Every process must see the same `items` in the same order (the same files, planned the same
    way); then the shares are disjoint and cover everything, so each item is handled exactly once.
    Dealing them out in turn keeps neighbours (often images of one size) spread over the processes.
    """
    return list(items[context.rank :: context.world])


def gather(value: T, context: Distributed) -> list[T]:
    """Every process's `value`, in rank order, in every process (`[value]` alone).

    Values are pickled and travel on the control (gloo) group, so results holding paths and
    numpy scalars need no device.
    """
    if not context.active:
        return [value]
    values: list[Any] = [None] * context.world
    dist.all_gather_object(values, value, group=context.control)
    return values
