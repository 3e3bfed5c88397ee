"""The results file of one experiment run (`results/<run>.json`): the record the report is made from.

It holds everything the report states and nothing it has to look up elsewhere: the run's merged
configuration, the base, the training budget and cost, the adapter's size, the versions and the
scores of the bench protocol per set. Non-finite numbers are written as "inf" (identical
images) or null (no image scored), so the file stays valid JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from adaptir_cli.training.checkpoint import write_json

RESULTS_FORMAT = "adaptir-experiment-run"
# Bump when a reader of the previous version would misread a new file.
RESULTS_VERSION = 1


class ResultsError(ValueError):
    """A results file that cannot be read; the message names it and what to do."""


def number(value: float | None) -> float | str | None:
    if value is None or math.isnan(value):
        return None
    return "inf" if math.isinf(value) else value


def write_results(path: Path, payload: dict[str, Any]) -> Path:
    """Atomically: a half-written file would poison the report."""
    return write_json(path, {"format": RESULTS_FORMAT, "format_version": RESULTS_VERSION, **payload})


def read_results(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ResultsError(f"cannot read the results file {path}: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != RESULTS_FORMAT:
        raise ResultsError(f"{path} is not an experiment results file (format {RESULTS_FORMAT!r})")
    if int(payload.get("format_version", 0)) > RESULTS_VERSION:
        raise ResultsError(f"{path} was written by a newer adaptir\nHint: upgrade adaptir (pip install -U adaptir).")
    return payload


def experiment_results(folder: Path) -> list[dict[str, Any]]:
    """Every run's results of an experiment folder, in run (file name) order."""
    files = sorted((Path(folder) / "results").glob("*.json"))
    if not files:
        raise ResultsError(
            f"{folder}: no results/*.json\nHint: run `adaptir experiment run {folder}` first."
        )
    return [read_results(file) for file in files]
