"""Turning a published weights file into a verified cache entry (`adaptir models import`).

The cache holds safetensors rather than the original pickles: they load without unpickling,
faster, and carry metadata recording which original file they came from.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save

from adaptir_cli.atomic_files import atomic_write

from adaptir_cli.bases import build_base, conversion_metadata, detect_architecture
from adaptir_cli.bases.architecture import StateDict
from adaptir_cli.bases.loading import WeightsError, read_state_dict, sha256_file
from adaptir_cli.weights.cache import cached_model
from adaptir_cli.weights.manifest import BaseEntry, Manifest, default_manifest


def import_weights(name: str, file: Path, *, force: bool = False, manifest: Manifest | None = None) -> Path:
    """Verify `file` as the manifest's base `name`, convert it into the cache and return the cached path.

    A file whose sha256 differs from the manifest's is refused unless `force`: the hash is what
    adapters use to recognise their base, so a silently different file would mislead them.
    """
    entry = (manifest or default_manifest()).base(name)
    if entry.kind == "bundled":
        raise WeightsError(f"{name} ships with adaptir; there is nothing to import\nHint: use it by name: --base {name}")
    file = Path(file)
    if not file.is_file():
        raise WeightsError(f"weights file not found: {file}\nHint: check the path of the downloaded file.")
    digest = sha256_file(file)
    if entry.sha256 is not None and digest != entry.sha256 and not force:
        raise WeightsError(
            f"{file} is not the published {name}: its sha256 is {digest}, the manifest expects {entry.sha256}\n"
            f"Hint: download the file again, or pass --force to import this file as {name} anyway."
        )
    return convert(entry, file, source_sha256=digest)


def convert(entry: BaseEntry, file: Path, *, source_sha256: str) -> Path:
    """Check that `file` really is `entry` (architecture, strict load, heads) and cache it as safetensors."""
    state = read_state_dict(file)
    architecture = detect_architecture(state, str(file))
    if architecture.name != entry.architecture:
        raise WeightsError(
            f"{file} holds {architecture.name} weights, but {entry.name} is a {entry.architecture} base\n"
            f"Hint: check that you picked the right file for {entry.name}."
        )
    canonical = architecture.canonicalize(state)
    # Building from the canonical keys proves that the cached file will load back the same way.
    base = build_base(canonical, name=entry.name, sha256=source_sha256, source=str(file))
    entry.rename_heads(base.descriptor)  # refuses a file whose heads the manifest's `heads` do not fit
    target = cached_model(entry.name)
    metadata = conversion_metadata(entry.name, architecture.name, source_sha256, canonical)
    # Bytes through atomic_write: safetensors' save_file would reset the file's mode to 0600.
    atomic_write(target, lambda handle: handle.write(save(_unshared(canonical), metadata=metadata)))
    return target


def _unshared(state: StateDict) -> StateDict:
    """Contiguous tensors owning their memory: safetensors refuses views and shared storage."""
    seen: set[int] = set()
    result = {}
    for key, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr()
        shared = pointer in seen and tensor.numel() > 0
        seen.add(pointer)
        result[key] = tensor.clone() if shared or not tensor.is_contiguous() else tensor
    return result
