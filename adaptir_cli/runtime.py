"""Device and precision choices, shared by restore, bench and finetune."""

from __future__ import annotations

import contextlib
from typing import Iterator, Literal

import torch

Precision = Literal["fp32", "bf16"]


class RuntimeChoiceError(ValueError):
    """A --device or --precision value that cannot work here; the message says what can."""


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` picks the first CUDA GPU when there is one, else the CPU; `cuda:N` must exist."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise RuntimeChoiceError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeChoiceError("CUDA was requested but this PyTorch build sees no GPU; use --device cpu")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise RuntimeChoiceError(f"there is no GPU {index}; this machine has {torch.cuda.device_count()}")
    elif device.type != "cpu":
        raise RuntimeChoiceError(f"unsupported device {spec!r}; use auto, cpu, cuda or cuda:N")
    return device


# fp16 is never offered (see check_precision).
PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(spec: str) -> str:
    """`spec` normalised, or RuntimeChoiceError: fp16 is never offered (black/NaN outputs and CPU
    crashes are the classic fp16 failures of restoration tools)."""
    spec = spec.strip().lower()
    if spec not in PRECISIONS:
        raise RuntimeChoiceError(f"unknown precision {spec!r}; use auto, fp32 or bf16")
    return spec


def resolve_precision(spec: str, device: torch.device, bf16_safe: bool) -> Precision:
    """`auto` is bf16 only on CUDA and only for bases verified in bf16."""
    spec = check_precision(spec)
    if spec == "auto":
        return "bf16" if device.type == "cuda" and bf16_safe else "fp32"
    return spec  # type: ignore[return-value]


def apply_tf32_policy(precision: Precision) -> bool:
    """Allow TF32 matmuls and convolutions (10-bit mantissas on Ampere and later) only with bf16.

    fp32 means fp32: PyTorch's defaults (TF32 convolutions on, matmuls off) would make an "fp32"
    run differ between GPU generations. Returns whether TF32 is allowed, for the run's record.
    """
    allowed = precision == "bf16"
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed
    return allowed


def accelerator_info(device: torch.device) -> dict[str, object]:
    """GPU, CUDA version and TF32 policy, for bench results and training logs: all change numbers."""
    return {
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda": torch.version.cuda,
        "tf32": torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32,
    }


def is_out_of_memory(error: BaseException) -> bool:
    """A device out-of-memory error, on any torch the package allows (>= 2.1).

    torch.OutOfMemoryError only exists from 2.5 on; before, CUDA raised torch.cuda.OutOfMemoryError,
    and other back-ends a plain RuntimeError saying "out of memory".
    """
    kinds = tuple(k for k in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if k)
    return isinstance(error, kinds) or (isinstance(error, RuntimeError) and "out of memory" in str(error))


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision) -> Iterator[None]:
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield
