"""AdaptFormer (Chen et al., 2022): a scaled ReLU bottleneck in parallel with each MLP."""

from adaptir_cli.adapters.adaptformer.config import AdaptFormerConfig
from adaptir_cli.adapters.adaptformer.layer import adaptformer

__all__ = ["AdaptFormerConfig", "adaptformer"]
