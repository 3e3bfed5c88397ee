"""LoRA (Hu et al., 2021): a trainable low-rank update B A added to the frozen weights of the MLP's layers."""

from adaptir_cli.adapters.lora.config import LoRAConfig
from adaptir_cli.adapters.lora.layer import LoRA

__all__ = ["LoRA", "LoRAConfig"]
