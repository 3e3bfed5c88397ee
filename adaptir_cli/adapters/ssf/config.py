"""Hyper-parameters of SSF: none. Its size is fixed by the base (2 x the output channels of each layer)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SSFConfig:
    """SSF has no size knob: one scale and one shift per output channel of every adapted layer."""
