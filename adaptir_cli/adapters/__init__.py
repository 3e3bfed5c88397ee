"""PETL adapters for frozen bases: methods, injection from outside, the adapter file, hot-swap."""

from adaptir_cli.adapters.adaptir import AdaptIR, AdaptIRConfig
from adaptir_cli.adapters.errors import AdapterFileError, AdapterMismatchError, UnknownMethodError
from adaptir_cli.adapters.file_format import (
    AdapterFile, check_compatible, check_task, is_adapter_file, read_adapter, save_adapter,
)
from adaptir_cli.adapters.injection import (
    AdaptedLayer,
    AdaptedMLP,
    AdaptedModule,
    adapted_layers,
    adapter_state_dict,
    inject,
    injected_method,
    load_adapter_state_dict,
    mark_only_adapters_trainable,
    remove_adapters,
    set_adapters_enabled,
    train_adapters,
)
from adaptir_cli.adapters.methods import METHODS, Method, get_method
from adaptir_cli.adapters.swap import apply_adapter

__all__ = [
    "METHODS", "AdaptIR", "AdaptIRConfig", "AdaptedLayer", "AdaptedMLP", "AdaptedModule", "AdapterFile", "AdapterFileError",
    "AdapterMismatchError", "Method", "UnknownMethodError", "adapted_layers", "adapter_state_dict",
    "apply_adapter", "check_compatible", "check_task", "get_method", "inject", "injected_method", "is_adapter_file",
    "load_adapter_state_dict", "mark_only_adapters_trainable", "read_adapter", "remove_adapters",
    "save_adapter", "set_adapters_enabled", "train_adapters",
]
