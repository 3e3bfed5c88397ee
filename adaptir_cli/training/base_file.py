"""Writing a trained base (`adaptir pretrain`, full fine-tuning) as a `.safetensors` weights file.

The file holds the module's state dict, which `adaptir_cli.bases.load_base_file` loads like any
other base, and the training summary as JSON under one metadata key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import save
from torch import nn

from adaptir_cli.atomic_files import atomic_write

# Metadata key of the training summary inside a written base file.
TRAINING_METADATA_KEY = "adaptir.training"


def save_base(out: Path, module: nn.Module, summary: Mapping[str, Any]) -> Path:
    """Write `module`'s tensors and `summary` to `out`, atomically.

    Cloned: safetensors refuses tensors that share storage, which a base may have.
    """
    state = {key: tensor.detach().cpu().clone().contiguous() for key, tensor in module.state_dict().items()}
    metadata = {TRAINING_METADATA_KEY: json.dumps(summary, sort_keys=True, default=str)}
    # safetensors' save_file would reset the file's mode to 0600; bytes go through atomic_write.
    atomic_write(out, lambda handle: handle.write(save(state, metadata=metadata)))
    return out
