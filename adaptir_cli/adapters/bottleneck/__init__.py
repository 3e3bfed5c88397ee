"""Adapter (Houlsby et al., 2019): a bottleneck applied in sequence after each MLP, with a residual."""

from adaptir_cli.adapters.bottleneck.config import BottleneckConfig
from adaptir_cli.adapters.bottleneck.layer import Bottleneck

__all__ = ["Bottleneck", "BottleneckConfig"]
