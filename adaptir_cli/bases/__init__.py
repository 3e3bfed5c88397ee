"""Frozen base architectures: detection from a state dict, shape-inferred building, strict loading."""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

from adaptir_cli.bases.architecture import Architecture, StateDict
from adaptir_cli.bases.descriptor import BaseDescriptor, Head
from adaptir_cli.bases.loading import WeightsError, load_strict, read_state_dict, sha256_file, tensor_digest
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


# Set by `adaptir models fetch/import` (and on the shipped bases) on the .safetensors it converts:
# the sha256 of the original download, so that a base has one identity (adapters name their base
# by it) whether it is loaded from the published .pth or from the cache; and the digest of the
# tensors written, so that a file whose tensors changed afterwards cannot keep that identity.
SOURCE_SHA256_KEY = "adaptir.source_sha256"
TENSORS_SHA256_KEY = "adaptir.tensors_sha256"


def load_base_file(path: Path, name: str | None = None, *, verified: bool = False) -> LoadedBase:
    """Load a weights file strictly. `verified=True` skips re-checking the tensors' digest (the
    caller checked this very file before: same size and modification time)."""
    path = Path(path)
    state = read_state_dict(path)
    sha256 = _identity(path, state, verified)
    return build_base(state, name=name or path.stem, sha256=sha256, source=str(path))


def conversion_metadata(name: str, architecture: str, source_sha256: str, state: StateDict) -> dict[str, str]:
    """The metadata of a converted base file: what it is, which original it came from, its tensors."""
    return {
        "format": "pt", "adaptir.name": name, SOURCE_SHA256_KEY: source_sha256,
        "adaptir.architecture": architecture, TENSORS_SHA256_KEY: tensor_digest(state),
    }


def _identity(path: Path, state: StateDict, verified: bool) -> str:
    """The sha256 adapters know the base by: the original's, recorded at conversion, once the
    tensors are proven to be the ones converted; the file's own sha256 otherwise."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        recorded = metadata.get(SOURCE_SHA256_KEY)
        if recorded:
            if not verified and metadata.get(TENSORS_SHA256_KEY) != tensor_digest(state):
                raise WeightsError(
                    f"{path} claims to be a conversion of the file with sha256 {recorded[:12]}..., but its tensors "
                    "are not the ones converted (changed afterwards, or converted by an older adaptir that did not "
                    "record their digest)\nHint: install it again: `adaptir models import NAME ORIGINAL_FILE` or `adaptir models fetch NAME`."
                )
            return recorded
    return sha256_file(path)


__all__ = [
    "SOURCE_SHA256_KEY", "TENSORS_SHA256_KEY", "Architecture", "BaseDescriptor", "Head", "LoadedBase", "WeightsError",
    "architectures", "build_base", "conversion_metadata", "detect_architecture", "load_base_file",
]
