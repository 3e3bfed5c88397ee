"""The contract every base architecture folder (bases/<arch>/) fulfils.

Like spandrel: an architecture recognises its checkpoints from their keys, infers its
hyper-parameters from tensor shapes, and maps the file's key names onto its own modules.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from adaptir_cli.bases.descriptor import BaseDescriptor

StateDict = dict[str, torch.Tensor]


class Architecture(Protocol):
    name: str

    def detect(self, state_dict: StateDict) -> bool:
        """True when the (prefix-stripped) keys look like this architecture's checkpoint."""

    def canonicalize(self, state_dict: StateDict) -> StateDict:
        """Rename the file's keys to the module's own names (identity when they already agree)."""

    def build(self, state_dict: StateDict) -> tuple[nn.Module, BaseDescriptor]:
        """Build an untrained module whose shapes match the canonical `state_dict`.

        The module's `forward(x, head=0)` takes (N, 3, H, W) in the descriptor's pixel range.
        """
