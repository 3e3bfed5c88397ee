"""Hot-swapping adapters on a base that is loaded once.

Swapping between adapters of the same method and config copies tensors into the modules already
in place (no module is built); another method or config replaces the injected modules. Nothing is
kept per adapter, so a swap costs the same however many adapters were used before.
"""

from __future__ import annotations

from adaptir_cli.adapters.file_format import AdapterFile, check_compatible
from adaptir_cli.adapters.injection import (
    inject,
    injected_method,
    load_adapter_state_dict,
    remove_adapters,
    set_adapters_enabled,
)
from adaptir_cli.bases.model import LoadedBase


def apply_adapter(base: LoadedBase, adapter: AdapterFile | None, force: bool = False) -> None:
    """Make `base` compute with `adapter`; None switches adapters off (the plain base's output).

    `force` accepts an adapter trained on other weights of a fitting shape (see check_compatible).
    Adapters arrive frozen, in the base's train/eval mode: this is the inference path.
    """
    module = base.module
    if adapter is None:
        set_adapters_enabled(module, False)
        return
    check_compatible(adapter, base, force=force)
    if injected_method(module) != (adapter.method, adapter.config):
        remove_adapters(module)
        inject(module, base.descriptor, adapter.method, adapter.config)
        module.requires_grad_(False)
    load_adapter_state_dict(module, adapter.state)
    set_adapters_enabled(module, True)
