"""From what a user types after --base (a manifest name or a file) to a loaded, frozen base."""

from __future__ import annotations

from pathlib import Path

from adaptir_cli.bases import load_base_file
from adaptir_cli.bases.loading import WeightsError
from adaptir_cli.bases.model import LoadedBase
from adaptir_cli.weights.cache import local_file
from adaptir_cli.weights.fetch import how_to_get
from adaptir_cli.weights.manifest import Manifest, default_manifest

_WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def load_default_base(manifest: Manifest | None = None) -> LoadedBase:
    """The base `adaptir restore` uses when no --base is given: the bundled default."""
    manifest = manifest or default_manifest()
    entry = manifest.default_base
    if entry is None:
        raise WeightsError(
            "this installation names no default base\nHint: pass --base NAME (see `adaptir models list`) or a weights file."
        )
    return load_base(entry.name, manifest)


def default_adapter(base: LoadedBase, task: str, manifest: Manifest | None = None) -> Path | None:
    """The installed adapter the project ships for `task` on `base`, or None."""
    entry = (manifest or default_manifest()).adapter_for(base.name, task)
    if entry is None:
        return None
    file = local_file(entry)
    if not file.is_file():
        raise WeightsError(f"the {task} adapter for {base.name} is not installed\nHint: {how_to_get(entry)}")
    return file


def load_base(name_or_path: str | Path, manifest: Manifest | None = None) -> LoadedBase:
    """Load a base by manifest name (from the cache or the package) or from a weights file.

    An existing file wins over a manifest name, so a local file named like a base still loads.
    """
    path = Path(name_or_path)
    if path.is_file():
        return load_base_file(path)
    name = str(name_or_path)
    manifest = manifest or default_manifest()
    if name not in manifest.bases and (path.suffix in _WEIGHT_SUFFIXES or len(path.parts) > 1):
        raise WeightsError(f"weights file not found: {path}\nHint: check the path, or pass a name from `adaptir models list`.")
    entry = manifest.base(name)
    file = local_file(entry)
    if not file.is_file():
        raise WeightsError(f"base {name} is not installed\nHint: {how_to_get(entry)}")
    base = load_base_file(file, name=name)
    base.descriptor = entry.rename_heads(base.descriptor)
    return base
