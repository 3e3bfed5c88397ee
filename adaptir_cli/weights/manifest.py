"""The weights manifest: which base models and shipped adapters adaptir knows, and where they come from.

The manifest is data (weights_manifest.toml) so that adding a base is a reviewed one-entry change,
and so that hashes and sizes sit next to the URLs they protect.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Collection
from dataclasses import MISSING, dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

from adaptir_cli.bases.descriptor import BaseDescriptor
from adaptir_cli.bases.loading import WeightsError
from adaptir_cli.tasks import TASKS

MANIFEST_NAME = "weights_manifest.toml"
_PACKAGE = Path(__file__).resolve().parents[1]
# Wheels carry the manifest inside the package (pyproject force-include); a source or editable
# checkout has it only at the repository top.
_MANIFEST_CANDIDATES = (_PACKAGE / MANIFEST_NAME, _PACKAGE.parent / MANIFEST_NAME)
BUNDLED_DIR = _PACKAGE / "weights" / "bundled"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_URL_SCHEMES = ("https://", "http://", "file://")

Kind = Literal["download", "manual", "bundled"]


class ManifestError(WeightsError):
    """The manifest itself is malformed (a broken install or a bad edit)."""


class UnknownNameError(WeightsError, LookupError):
    """A name that is not in the manifest: a usage error, reported with the closest names."""


@dataclass(frozen=True, kw_only=True)
class WeightsEntry:
    """Where one weights file comes from and how to recognise it."""

    name: str
    source: str
    license: str
    description: str
    manual: bool = False
    # The file to fetch by hand from the `source` page (manual entries).
    file: str | None = None
    # The shipped file (bundled entries), resolved against the manifest's bundled folder.
    path: Path | None = None
    size: int | None = None
    sha256: str | None = None
    # A published file shipped converted: the shipped file's own size and sha256 (size and
    # sha256 above stay those of the published original, the identity adapters record).
    bundled_size: int | None = None
    bundled_sha256: str | None = None
    # The licence text shipped beside a bundled published file, under the bundled folder.
    license_file: Path | None = None

    @property
    def kind(self) -> Kind:
        if self.path is not None:
            return "bundled"
        return "manual" if self.manual else "download"

    @property
    def shipped_sha256(self) -> str | None:
        """The sha256 of the file inside the package, byte for byte (bundled entries)."""
        return self.bundled_sha256 or (self.sha256 if self.source == "bundled" else None)

    @property
    def shipped_size(self) -> int | None:
        return self.bundled_size or (self.size if self.source == "bundled" else None)


@dataclass(frozen=True, kw_only=True)
class BaseEntry(WeightsEntry):
    architecture: str
    tasks: tuple[str, ...]
    heads: tuple[str, ...] | None = None

    def rename_heads(self, descriptor: BaseDescriptor) -> BaseDescriptor:
        """Give the file's heads the manifest's names, in head-index order (identity without `heads`)."""
        if self.heads is None:
            return descriptor
        ordered = sorted(descriptor.heads.values(), key=lambda head: head.index)
        if len(ordered) != len(self.heads):
            raise WeightsError(
                f"the manifest names {len(self.heads)} head(s) for {self.name} ({', '.join(self.heads)}) "
                f"but the file has {len(ordered)} ({', '.join(descriptor.heads)})\n"
                f"Hint: the file is probably not {self.name}; check which file you imported."
            )
        return replace(descriptor, heads=dict(zip(self.heads, ordered)))


@dataclass(frozen=True, kw_only=True)
class AdapterEntry(WeightsEntry):
    base: str
    task: str
    method: str = "adaptir"


@dataclass(frozen=True)
class Manifest:
    path: Path
    bases: dict[str, BaseEntry]
    adapters: dict[str, AdapterEntry]
    # task -> the base every command uses for it when no --base is given (bundled: works offline).
    defaults: dict[str, str] = field(default_factory=dict)
    # Other shipped networks, by name: the `--task auto` classifier (adaptir_cli/auto_task.py).
    classifiers: dict[str, WeightsEntry] = field(default_factory=dict)

    def default_base_for(self, task: str) -> BaseEntry | None:
        name = self.defaults.get(task)
        return None if name is None else self.bases[name]

    def adapter_for(self, base: str, task: str) -> AdapterEntry | None:
        """The shipped adapter for `task` on the base named `base`, if the project has one."""
        return next((a for a in self.adapters.values() if a.base == base and a.task == task), None)

    def base(self, name: str) -> BaseEntry:
        try:
            return self.bases[name]
        except KeyError:
            raise UnknownNameError(_unknown("base model", name, self.bases)) from None


def _unknown(kind: str, name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    guess = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"unknown {kind} {name!r}{guess}\nHint: `adaptir models list` shows the known names."


def default_manifest_path() -> Path:
    for candidate in _MANIFEST_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise ManifestError(
        f"{MANIFEST_NAME} is missing from the installation (looked in {_MANIFEST_CANDIDATES[0].parent})\n"
        "Hint: reinstall adaptir."
    )


@cache
def default_manifest() -> Manifest:
    return load_manifest(default_manifest_path())


def load_manifest(path: Path, *, bundled_dir: Path = BUNDLED_DIR) -> Manifest:
    """Parse and validate a manifest; `bundled_dir` is where `path = ...` of bundled entries points."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ManifestError(f"cannot read the weights manifest {path}: {error}") from error
    unknown_tables = set(data) - {"bases", "adapters", "defaults", "classifiers"}
    if unknown_tables:
        raise ManifestError(
            f"{path}: unknown top-level table(s) {sorted(unknown_tables)}; expected bases, adapters, defaults, classifiers"
        )
    context = _Context(path, bundled_dir)
    bases = {name: context.entry(BaseEntry, name, raw) for name, raw in data.get("bases", {}).items()}
    adapters = {name: context.entry(AdapterEntry, name, raw) for name, raw in data.get("adapters", {}).items()}
    for entry in adapters.values():
        if entry.base not in bases:
            raise ManifestError(f"{path}: adapter {entry.name} names base {entry.base!r}, which is not in [bases]")
    classifiers = {name: context.entry(WeightsEntry, name, raw) for name, raw in data.get("classifiers", {}).items()}
    defaults = data.get("defaults", {})
    manifest = Manifest(path=path, bases=bases, adapters=adapters, defaults=dict(defaults), classifiers=classifiers)
    for task, name in defaults.items():
        context.check_default(task, name, manifest)
    return manifest


@dataclass(frozen=True)
class _Context:
    path: Path
    bundled_dir: Path

    def fail(self, name: str, problem: str) -> ManifestError:
        return ManifestError(f"{self.path}: entry {name!r} {problem}")

    def entry(self, cls: type[WeightsEntry], name: str, raw: Any) -> Any:
        if not isinstance(raw, dict):
            raise self.fail(name, "must be a table")
        declared = {f.name: f for f in fields(cls) if f.name != "name"}
        required = {key for key, f in declared.items() if f.default is MISSING}
        if extra := set(raw) - set(declared):
            raise self.fail(name, f"has unknown key(s) {sorted(extra)}; allowed: {sorted(declared)}")
        if missing := required - set(raw):
            raise self.fail(name, f"lacks {sorted(missing)}")
        values = dict(raw)
        for key, value in raw.items():
            if key in ("tasks", "heads"):
                values[key] = self.strings(name, key, value)
            elif key in ("path", "license_file"):
                values[key] = self.bundled_dir / self.text(name, key, value)
            elif key not in ("manual", "size", "bundled_size"):
                self.text(name, key, value)
        for task in values.get("tasks", ()) + ((values["task"],) if "task" in values else ()):
            if task not in TASKS:
                raise self.fail(name, f"names unknown task {task!r}; known: {', '.join(TASKS)}")
        entry = cls(name=name, **values)
        self.check_source(entry)
        return entry

    def text(self, name: str, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(name, f"{key} must be a non-empty string")
        return value

    def strings(self, name: str, key: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(name, f"{key} must be a non-empty list of strings")
        return tuple(value)

    def check_source(self, entry: WeightsEntry) -> None:
        name = entry.name
        for key in ("sha256", "bundled_sha256"):
            digest = getattr(entry, key)
            if digest is not None and not _SHA256.fullmatch(digest):
                raise self.fail(name, f"has a {key} that is not 64 lower-case hex digits")
        if not isinstance(entry.manual, bool):
            raise self.fail(name, "has a manual that is not true or false")
        for key in ("size", "bundled_size"):
            size = getattr(entry, key)
            if size is not None and (type(size) is not int or size <= 0):
                raise self.fail(name, f"has a {key} that is not a positive number of bytes")
        published = entry.source != "bundled"
        if not published and entry.path is None:
            raise self.fail(name, 'is bundled but has no path (under adaptir_cli/weights/bundled/)')
        if published and not entry.source.startswith(_URL_SCHEMES):
            raise self.fail(name, f'has source {entry.source!r}: expected a URL or "bundled"')
        # A published file shipped converted keeps its licence text and both hashes beside it.
        shipped_published = ("bundled_sha256", "bundled_size", "license_file")
        if published and entry.path is not None and any(getattr(entry, key) is None for key in shipped_published):
            raise self.fail(name, f"ships a published file, so it must set {', '.join(shipped_published)}")
        if (not published or entry.path is None) and any(getattr(entry, key) is not None for key in shipped_published):
            raise self.fail(name, f"sets {', '.join(shipped_published)}, which only a shipped published file has")
        if entry.manual != (entry.file is not None):
            raise self.fail(name, "must set `file` (the file to download by hand) exactly when manual = true")

    def check_default(self, task: Any, name: Any, manifest: Manifest) -> None:
        where = f"{self.path}: [defaults] {task} = {name!r}"
        if task not in TASKS:
            raise ManifestError(f"{self.path}: [defaults] names unknown task {task!r}; known: {', '.join(TASKS)}")
        if not isinstance(name, str) or name not in manifest.bases:
            raise ManifestError(f"{where} is not a base in [bases]")
        entry, adapter = manifest.bases[name], manifest.adapter_for(name, task)
        if entry.kind != "bundled":
            raise ManifestError(f"{where} must be a bundled base, so that the default works offline")
        shipped = adapter is not None and adapter.kind == "bundled"
        if not shipped and (TASKS[task].adapter_required or task not in entry.tasks):
            raise ManifestError(f"{where}: the base alone cannot do {task}, and no bundled adapter for it is listed")
