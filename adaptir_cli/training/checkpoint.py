"""Training checkpoints (what `--resume` continues from) and the run's JSON log.

A checkpoint holds everything the next step depends on: the trainable tensors (buffers such as
BatchNorm statistics included), the optimizer's moments, the step (the learning rate and the
batches are functions of it: training/schedule.py, training/sampling.py), the torch RNG states,
the history so far, and the settings that must not change across a resume. It is a
`weights_only` PyTorch file, written under a temporary name and renamed, so a kill during the
save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adaptir_cli.atomic_files import atomic_write, atomic_write_text

FORMAT = "adaptir-training-checkpoint"
# Bump when a checkpoint of the previous version would be misread.
FORMAT_VERSION = 1


class ResumeError(ValueError):
    """A checkpoint cannot be resumed; the message says why and what to do."""


def checkpoint_path(output: Path) -> Path:
    """Where a run writing `output` keeps its checkpoint: beside it, `NAME.ckpt`."""
    return Path(output).with_suffix(".ckpt")


def log_path(output: Path) -> Path:
    """The run's JSON log beside its output: `NAME.json`."""
    return Path(output).with_suffix(".json")


@dataclass
class History:
    """What a run has done so far; carried across resumes."""

    losses: list[float] = field(default_factory=list)
    validations: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"losses": self.losses, "validations": self.validations, "best": self.best, "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "History":
        return cls(list(data["losses"]), list(data["validations"]), data["best"], float(data["seconds"]))


@dataclass
class Checkpoint:
    step: int
    # Settings that define the run (data, model, seed, global batch, schedule, ...): a resume
    # with other values would silently train something else, so they must match.
    identity: dict[str, Any]
    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    history: History


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> Path:
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "step": checkpoint.step,
        # JSON text: the settings and history are plain data, and stay readable in any version.
        "identity": json.dumps(checkpoint.identity, sort_keys=True),
        "history": json.dumps(checkpoint.history.to_json()),
        "trainable": {key: tensor.detach().cpu().clone() for key, tensor in checkpoint.trainable.items()},
        "optimizer": checkpoint.optimizer,
        "rng": checkpoint.rng,
    }
    atomic_write(path, lambda handle: torch.save(payload, handle))
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise ResumeError(f"no checkpoint to resume at {path}\nHint: start the run without --resume.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling fails in many ways on a damaged file
        raise ResumeError(
            f"{path} is not a readable checkpoint ({error})\nHint: delete it and start again without --resume."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ResumeError(f"{path} is not an adaptir training checkpoint")
    if payload["format_version"] > FORMAT_VERSION:
        raise ResumeError(
            f"{path} was written by a newer adaptir (checkpoint format {payload['format_version']})\n"
            "Hint: upgrade adaptir."
        )
    return Checkpoint(
        step=int(payload["step"]),
        identity=json.loads(payload["identity"]),
        trainable=payload["trainable"],
        optimizer=payload["optimizer"],
        rng=payload["rng"],
        history=History.from_json(json.loads(payload["history"])),
    )


# The folders and files of a run's data (DataOptions): compared as the files they name.
_DATA_PATHS = ("gt", "lq", "val_gt", "val_lq", "exclude")


def _resolved_data(identity: dict[str, Any]) -> dict[str, Any]:
    """`identity` with its data paths made absolute: '../shared/data/x' and '/work/shared/data/x'
    are the same images, and a resume must not be refused for how a path was spelled."""
    data = identity.get("data")
    if not isinstance(data, dict):
        return identity
    resolved = {k: str(Path(v).resolve()) if k in _DATA_PATHS and isinstance(v, str) else v for k, v in data.items()}
    return {**identity, "data": resolved}


def check_resumable(checkpoint: Checkpoint, identity: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint of another run, listing every setting that differs."""
    # Round-trip through JSON so tuples compare equal to the lists a checkpoint holds.
    current = _resolved_data(json.loads(json.dumps(identity, sort_keys=True)))
    saved = _resolved_data(checkpoint.identity)
    differences = [
        f"{key}: checkpoint {saved.get(key)!r}, now {current.get(key)!r}"
        for key in sorted(set(current) | set(saved))
        if saved.get(key) != current.get(key)
    ]
    if differences:
        raise ResumeError(
            f"{path} belongs to a run with other settings:\n  " + "\n  ".join(differences)
            + "\nHint: resume with the original settings, or delete the checkpoint to start afresh."
        )


def write_json(path: Path, payload: Any) -> Path:
    path = Path(path)
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write_text(path, text)
    return path

