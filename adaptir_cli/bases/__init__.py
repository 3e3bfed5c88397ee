"""Frozen base architectures: detection from a state dict, shape-inferred building, strict loading."""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

from adaptir_cli.bases.architecture import Architecture, StateDict
from adaptir_cli.bases.descriptor import BaseDescriptor, Head
from adaptir_cli.bases.loading import WeightsError, load_strict, read_state_dict, sha256_file
from adaptir_cli.bases.model import LoadedBase

# One sub-package per architecture, each exporting `architecture`; imported on first use so that
# `adaptir --help` does not pay for every model definition.
ARCHITECTURE_PACKAGES = ("compactir", "emt", "ipt", "lmlt")


@cache
def architectures() -> dict[str, Architecture]:
    found = (importlib.import_module(f"adaptir_cli.bases.{pkg}").architecture for pkg in ARCHITECTURE_PACKAGES)
    return {arch.name: arch for arch in found}


def detect_architecture(state: StateDict, source: str = "<state dict>") -> Architecture:
    for arch in architectures().values():
        if arch.detect(state):
            return arch
    sample = ", ".join(sorted(state)[:8])
    raise WeightsError(
        f"{source}: no known architecture matches these weights (first keys: {sample}). "
        f"Known architectures: {', '.join(architectures())}."
    )


def build_base(state: StateDict, *, name: str, sha256: str, source: str) -> LoadedBase:
    """Detect, build and strictly load a base from an already-read state dict."""
    arch = detect_architecture(state, source)
    state = arch.canonicalize(state)
    module, descriptor = arch.build(state)
    load_strict(module, state, source)
    return LoadedBase(name=name, module=module, descriptor=descriptor, sha256=sha256, source=source).freeze()


# Set by `adaptir models fetch/import` on the .safetensors it converts: the sha256 of the original
# download, so that a base has one identity (adapters name their base by it) whether it is loaded
# from the published .pth or from the cache.
SOURCE_SHA256_KEY = "adaptir.source_sha256"


def load_base_file(path: Path, name: str | None = None) -> LoadedBase:
    path = Path(path)
    state = read_state_dict(path)
    return build_base(state, name=name or path.stem, sha256=_source_sha256(path), source=str(path))


def _source_sha256(path: Path) -> str:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            recorded = (handle.metadata() or {}).get(SOURCE_SHA256_KEY)
        if recorded:
            return recorded
    return sha256_file(path)


__all__ = [
    "SOURCE_SHA256_KEY", "Architecture", "BaseDescriptor", "Head", "LoadedBase", "WeightsError",
    "architectures", "build_base", "detect_architecture", "load_base_file",
]
