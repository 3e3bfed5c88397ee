"""Reading weight files and loading them strictly into a base architecture."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from adaptir_cli.bases.architecture import StateDict

# Training frameworks nest the weights under one of these keys (BasicSR: "params"; others).
_NESTING_KEYS = ("params", "state_dict", "model", "net", "params_ema")
# Wrappers such as DataParallel prefix every key; the official IPT loader silently loaded
# nothing from such files, so they are canonicalised here instead.
_PREFIXES = ("module.", "model.")


class WeightsError(ValueError):
    """A weights file cannot be used; the message says why and what to do."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tensor_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names and bytes of `state`'s tensors, in name order (any dtype, any device)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_state_dict(path: Path) -> StateDict:
    """Read a `.safetensors` file or a `weights_only` PyTorch pickle as a flat state dict."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except SafetensorError as error:  # a cut-off or damaged file, not a bug
            raise WeightsError(
                f"{path} is not a complete .safetensors file ({error})\n"
                "Hint: download or copy it again; an interrupted transfer is the usual cause."
            ) from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # pickle errors come in many types; PyTorch's text urges unsafe loading
            raise WeightsError(
                f"{path} is not a plain tensor checkpoint, and adaptir never loads one unsafely: "
                "unpickling it could run any code it holds\n"
                "Hint: use the published checkpoint, or convert this one to .safetensors where you trust it."
            ) from None
    return strip_prefixes(unnest(state, path))


def unnest(state: object, path: Path | str = "<state dict>") -> StateDict:
    while isinstance(state, dict) and not _is_flat(state):
        key = next((k for k in _NESTING_KEYS if k in state), None)
        if key is None:
            raise WeightsError(f"{path}: no state dict found; top-level keys are {sorted(state)[:10]}")
        state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
    return dict(state)


def _is_flat(state: dict) -> bool:
    return bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())


def strip_prefixes(state: StateDict) -> StateDict:
    for prefix in _PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def load_strict(module: nn.Module, state: StateDict, source: str) -> None:
    """Load every tensor of `module` from `state`; refuse any mismatch with a readable list."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(expected) & set(state)
        if state[key].shape != expected[key].shape
    )
    if missing or unexpected or wrong_shape:
        lines = [f"{source} does not match the architecture it was detected as:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                shown = keys[:20] + ([f"... and {len(keys) - 20} more"] if len(keys) > 20 else [])
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(shown))
        lines.append("Hint: check that the file is the architecture's published checkpoint.")
        raise WeightsError("\n".join(lines))
    module.load_state_dict(state, strict=True)
