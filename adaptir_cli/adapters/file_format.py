"""The adapter file: one `.safetensors` holding an adapter's state dict plus string metadata.

Metadata (all strings; structures JSON-encoded) names the method and its config, the base the
adapter was trained on (by the sha256 of its weights file), the task and its output scale, and
optionally a training summary. Tensor keys are "{target module}.{adapter key}", buffers included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from adaptir_cli.adapters.errors import AdapterFileError, AdapterMismatchError
from adaptir_cli.adapters.injection import adapter_state_dict, expected_adapter_shapes, state_mismatches
from adaptir_cli.adapters.methods import get_method
from adaptir_cli.atomic_files import atomic_write
from adaptir_cli.bases.model import LoadedBase
from adaptir_cli.tasks import get_task, head_for

FORMAT_NAME = "adaptir-adapter"
# Bump when a reader of the previous version would misread a new file.
FORMAT_VERSION = 1
_REQUIRED = ("format_version", "method", "method_config", "base_name", "base_sha256", "base_architecture",
             "task", "scale")


@dataclass(frozen=True)
class AdapterFile:
    """One trained adapter: its tensors and what they belong to."""

    method: str
    config: Any
    base_name: str
    base_sha256: str
    base_architecture: str
    task: str
    scale: int
    state: dict[str, torch.Tensor]
    training: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    path: Path | None = None

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else f"{self.method} adapter for {self.task}"


def save_adapter(
    path: Path | str,
    module: nn.Module,
    *,
    method: str,
    config: Any,
    base: LoadedBase,
    task: str,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write the adapters injected into `module` (the base's module) to `path`, atomically.

    The file is written under a temporary name beside `path` and renamed, so an interrupted save
    never leaves a truncated adapter where a good one was.
    """
    path = Path(path)
    method_spec = get_method(method)
    config_json = json.dumps(method_spec.config_to_dict(config), sort_keys=True)
    task_spec = get_task(task)
    head_for(task_spec, base.descriptor.heads)  # refuse a task this base cannot run
    state = {key: tensor.detach().cpu().contiguous() for key, tensor in adapter_state_dict(module).items()}
    if not state:
        raise ValueError("no adapters are injected into this module; nothing to save")
    problems = state_mismatches(state, expected_adapter_shapes(module, base.descriptor, method, config))
    if problems:
        raise AdapterMismatchError(
            f"the injected adapters are not {method} adapters with config {config_json} for base "
            f"{base.name!r}:\n  " + "\n  ".join(problems)
        )
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "method": method,
        "method_config": config_json,
        "base_name": base.name,
        "base_sha256": base.sha256,
        "base_architecture": base.descriptor.architecture,
        "task": task,
        "scale": str(task_spec.scale),
    }
    if training is not None:
        metadata["training"] = json.dumps(training, sort_keys=True)
    # Bytes through atomic_write: safetensors' save_file would reset the file's mode to 0600.
    atomic_write(path, lambda handle: handle.write(save(state, metadata=metadata)))
    return path


def is_adapter_file(path: Path | str) -> bool:
    """Whether `path` is a .safetensors file that says it is an adaptir adapter (bases say nothing of the kind)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == FORMAT_NAME
    except SafetensorError:
        return False


def read_adapter(path: Path | str) -> AdapterFile:
    """Read an adapter file; raises AdapterFileError saying what is wrong with anything else."""
    path = Path(path)
    if not path.is_file():
        raise AdapterFileError(f"adapter file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            _check_header(path, metadata)
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except SafetensorError as error:
        raise AdapterFileError(
            f"{path} is not a .safetensors adapter file ({error})\nHint: adapter files are written by "
            "adaptir's fine-tuning; base weights are loaded as bases, not adapters."
        ) from None
    try:
        method = get_method(metadata["method"])
        config = method.config_from_dict(json.loads(metadata["method_config"]))
        training = json.loads(metadata["training"]) if "training" in metadata else None
        scale = int(metadata["scale"])
    except (KeyError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        raise AdapterFileError(
            f"{path}: unreadable adapter metadata ({error})\nHint: upgrade adaptir if the file is newer, "
            "or re-save the adapter."
        ) from None
    return AdapterFile(
        method=method.name,
        config=config,
        base_name=metadata["base_name"],
        base_sha256=metadata["base_sha256"],
        base_architecture=metadata["base_architecture"],
        task=metadata["task"],
        scale=scale,
        state=state,
        training=training,
        format_version=int(metadata["format_version"]),
        path=path,
    )


def _check_header(path: Path, metadata: dict[str, str]) -> None:
    if metadata.get("format") != FORMAT_NAME:
        raise AdapterFileError(
            f"{path} is a .safetensors file but not an adaptir adapter (no format={FORMAT_NAME!r} in its "
            "metadata)\nHint: base weights are loaded as bases, not adapters."
        )
    missing = [key for key in _REQUIRED if key not in metadata]
    if missing:
        raise AdapterFileError(f"{path}: adapter metadata lacks {', '.join(missing)}; re-save the adapter")
    try:
        version = int(metadata["format_version"])
    except ValueError:
        raise AdapterFileError(f"{path}: invalid format_version {metadata['format_version']!r}") from None
    if version > FORMAT_VERSION:
        raise AdapterFileError(
            f"{path} was written by a newer adaptir (adapter format {version}; this version reads up to "
            f"{FORMAT_VERSION})\nHint: upgrade adaptir (pip install -U adaptir)."
        )


def check_compatible(adapter: AdapterFile, base: LoadedBase, force: bool = False) -> None:
    """Refuse an adapter trained on other weights (unless forced) or whose tensors cannot fit this base."""
    expected = expected_adapter_shapes(base.module, base.descriptor, adapter.method, adapter.config)
    problems = state_mismatches(adapter.state, expected)
    if problems:
        raise AdapterMismatchError(
            f"{adapter.label} ({adapter.method}, trained on {adapter.base_architecture} base "
            f"{adapter.base_name!r}) cannot fit the loaded {base.descriptor.architecture} base {base.name!r}, "
            "not even with --force:\n  " + "\n  ".join(problems)
            + "\nHint: use an adapter trained for this base."
        )
    if adapter.base_sha256 != base.sha256 and not force:
        raise AdapterMismatchError(
            f"{adapter.label} was trained on base {adapter.base_name!r} (sha256 {adapter.base_sha256[:12]}...), "
            f"but the loaded base is {base.name!r} (sha256 {base.sha256[:12]}...). Its output on other "
            "weights is untested\nHint: load the base it was trained on, or pass --force to load anyway."
        )


def check_task(adapter: AdapterFile, task: str, force: bool = False) -> None:
    """Refuse (unless forced) an adapter trained for another task or output scale than `task`."""
    chosen = get_task(task)
    if (adapter.task, adapter.scale) != (chosen.name, chosen.scale) and not force:
        raise AdapterMismatchError(
            f"{adapter.label} was trained for task {adapter.task} (x{adapter.scale}), not for task {chosen.name} "
            f"(x{chosen.scale})\nHint: pass --task {adapter.task}, or --force to run it for {chosen.name} anyway."
        )
