"""SSF (Lian et al., 2022): a learned per-channel scale and shift after each frozen layer of the MLP."""

from adaptir_cli.adapters.ssf.config import SSFConfig
from adaptir_cli.adapters.ssf.layer import SSF

__all__ = ["SSF", "SSFConfig"]
