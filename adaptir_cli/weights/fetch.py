"""Downloading a manifest base into the cache (`adaptir models fetch`).

The download streams into a temporary file beside the cache while hashing it; only a file whose
size and sha256 match the manifest is converted (like `adaptir models import`) and renamed into
place, so a failed or interrupted download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from adaptir_cli.bases.loading import WeightsError
from adaptir_cli.weights.cache import download_file, local_file
from adaptir_cli.weights.importing import convert
from adaptir_cli.weights.manifest import BaseEntry, Manifest, WeightsEntry, default_manifest

_CHUNK = 1 << 16
_TIMEOUT_S = 60


def is_offline() -> bool:
    """ADAPTIR_OFFLINE=1 promises that adaptir makes no network connection at all."""
    return os.environ.get("ADAPTIR_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def how_to_get(entry: WeightsEntry) -> str:
    """The hint telling a user how to install a base or adapter that is not on this machine."""
    if entry.kind == "bundled":
        return f"{entry.name} ships inside the adaptir package, which is incomplete: reinstall adaptir."
    if entry.kind == "manual":
        return (
            f"download {entry.file} by hand from {entry.source}, "
            f"then run `adaptir models import {entry.name} path/to/{entry.file}`."
        )
    if is_offline():
        return (
            f"ADAPTIR_OFFLINE is set, so adaptir will not download it: unset ADAPTIR_OFFLINE and run "
            f"`adaptir models fetch {entry.name}`, or download {entry.source} elsewhere and run "
            f"`adaptir models import {entry.name} FILE`."
        )
    return f"run `adaptir models fetch {entry.name}`."


def fetch(name: str, manifest: Manifest | None = None, *, console: Console | None = None) -> Path:
    """Download, verify and convert base `name` into the cache; returns the file it now loads from.

    Progress is drawn on `console` (stderr by default) so that stdout stays free for --json.
    """
    entry = (manifest or default_manifest()).base(name)
    if entry.kind == "bundled":
        return local_file(entry)
    if entry.kind == "manual" or is_offline():
        reason = "cannot be downloaded automatically" if entry.kind == "manual" else "is not downloaded: offline mode"
        raise WeightsError(f"{name} {reason}\nHint: {how_to_get(entry)}")
    suffix = Path(urlparse(entry.source).path).suffix or ".pth"
    with download_file(name, suffix) as scratch:
        digest = _download(entry, scratch, console or Console(stderr=True))
        return convert(entry, scratch, source_sha256=digest)


def _download(entry: BaseEntry, target: Path, console: Console) -> str:
    """Stream `entry.source` into `target`; returns the sha256 after checking size and hash."""
    retry = (
        f"Hint: run `adaptir models fetch {entry.name}` again; if it keeps failing, download "
        f"{entry.source} yourself and run `adaptir models import {entry.name} FILE`."
    )
    digest = hashlib.sha256()
    received = 0
    columns = (
        TextColumn(entry.name), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
    )
    try:
        with urllib.request.urlopen(entry.source, timeout=_TIMEOUT_S) as response, open(target, "wb") as out:
            declared = int(response.headers.get("Content-Length") or 0) or None
            with Progress(*columns, console=console, transient=True) as progress:
                task = progress.add_task("download", total=entry.size or declared)
                while block := response.read(_CHUNK):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    progress.update(task, completed=received)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise WeightsError(f"downloading {entry.name} from {entry.source} failed: {reason}\n{retry}") from error
    # http.client does not raise when a connection closes before Content-Length bytes arrived.
    if declared is not None and received != declared:
        raise WeightsError(f"the download of {entry.name} stopped after {received} of {declared} bytes\n{retry}")
    if entry.size is not None and received != entry.size:
        raise WeightsError(f"the download of {entry.name} is {received} bytes; the manifest expects {entry.size}\n{retry}")
    if entry.sha256 is not None and digest.hexdigest() != entry.sha256:
        raise WeightsError(
            f"the download of {entry.name} is corrupted: sha256 {digest.hexdigest()}, expected {entry.sha256}\n{retry}"
        )
    return digest.hexdigest()
