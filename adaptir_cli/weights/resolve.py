"""From what a user types after --base (a manifest name or a file) to a loaded, frozen base."""

from __future__ import annotations

from pathlib import Path

from adaptir_cli.bases import load_base_file
from adaptir_cli.bases.loading import WeightsError
from adaptir_cli.bases.model import LoadedBase
from adaptir_cli.weights.cache import local_file
from adaptir_cli.weights.fetch import how_to_get
from adaptir_cli.weights.manifest import Manifest, default_manifest
from adaptir_cli.weights.verification import is_verified, remember

_WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def base_for(task: str, base: str | Path | None = None, manifest: Manifest | None = None) -> str | Path:
    """What serves `task`: the --base the user gave, else the manifest's default base for the task.

    `restore`, `bench` and `finetune` all ask here, so the three agree on what "no --base" means.
    """
    if base is not None:
        return base
    entry = (manifest or default_manifest()).default_base_for(task)
    if entry is None:
        raise WeightsError(
            f"no shipped base serves task {task}\nHint: pass --base NAME (see `adaptir models list`) or a weights file."
        )
    return entry.name


def default_adapter(base: LoadedBase, task: str, manifest: Manifest | None = None) -> Path | None:
    """The installed adapter the project ships for `task` on `base`, or None.

    The base is recognised by name or, when it was loaded from a file, by its sha256 identity.
    """
    manifest = manifest or default_manifest()
    names = [base.name] + [entry.name for entry in manifest.bases.values() if entry.sha256 == base.sha256]
    entry = next((found for name in names if (found := manifest.adapter_for(name, task)) is not None), None)
    if entry is None:
        return None
    file = local_file(entry)
    if not file.is_file():
        raise WeightsError(f"the {task} adapter for {base.name} is not installed\nHint: {how_to_get(entry)}")
    return file


def adapter_file(name_or_path: str | Path, manifest: Manifest | None = None) -> Path:
    """An adapter by the name `adaptir models list` shows, or a file (an existing file wins)."""
    path = Path(name_or_path)
    entry = (manifest or default_manifest()).adapters.get(str(name_or_path))
    if path.is_file() or entry is None:
        return path  # a missing file is reported where it is read, with the path the user typed
    file = local_file(entry)
    if not file.is_file():
        raise WeightsError(f"adapter {entry.name} is not installed\nHint: {how_to_get(entry)}")
    return file


def load_base(name_or_path: str | Path, manifest: Manifest | None = None) -> LoadedBase:
    """Load a base by manifest name (from the cache or the package) or from a weights file.

    An existing file wins over a manifest name, so a local file named like a base still loads.
    """
    path = Path(name_or_path)
    if path.is_file():
        return _load_checked(path)
    name = str(name_or_path)
    manifest = manifest or default_manifest()
    if name not in manifest.bases and (path.suffix in _WEIGHT_SUFFIXES or len(path.parts) > 1):
        raise WeightsError(f"weights file not found: {path}\nHint: check the path, or pass a name from `adaptir models list`.")
    entry = manifest.base(name)
    file = local_file(entry)
    if not file.is_file():
        raise WeightsError(f"base {name} is not installed\nHint: {how_to_get(entry)}")
    base = _load_checked(file, name)
    base.descriptor = entry.rename_heads(base.descriptor)
    return base


def _load_checked(file: Path, name: str | None = None) -> LoadedBase:
    """Load a file, checking a converted file's tensors unless this very file passed before."""
    known = is_verified(file)  # one read of the ledger; a second only to add this file
    base = load_base_file(file, name=name, verified=known)
    if not known:
        remember(file)
    return base
