"""Injecting adapters from outside a base: wrap each transformer MLP, peft-style.

The base's code never mentions adapters. `inject` walks `named_modules()`, and every module whose
qualified name fullmatches the descriptor's `mlp_pattern` (or, for methods placed on "layers",
every dense layer inside such a module) is replaced in its parent by a wrapper holding the
original module (`base_layer`) and one adapter. Because of that wrapping, the base's own tensors
appear under "{target}.base_layer.*" while adapters are injected; `remove_adapters` restores the
original module tree and key names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from itertools import chain
from typing import Any, get_args

import torch
from torch import nn

from adaptir_cli.adapters.errors import AdapterMismatchError
from adaptir_cli.adapters.methods import Method, Placement, get_method
from adaptir_cli.bases.descriptor import BaseDescriptor, MLPLayout

# Set on the injected root: (method name, config), so hot-swap can tell whether modules can be reused.
_INJECTION_ATTR = "_adaptir_injection"


class AdaptedModule(nn.Module):
    """A frozen `base_layer` with an `adapter`; when disabled it computes exactly `base_layer`."""

    def __init__(self, base_layer: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter
        self.enabled = True


class AdaptedMLP(AdaptedModule):
    """`base_layer(n) + adapter(source)`: the source is `n` ("parallel") or `base_layer(n)` ("sequential").

    The adapter sees feature maps. layout "nchw": tensors already are (N, d, H, W). layout
    "seq_first": tokens (L, N, d) in row-major order of a `grid` of rows x cols = L; `grid=None`
    takes the square sqrt(L) x sqrt(L).
    """

    def __init__(
        self, base_layer: nn.Module, adapter: nn.Module, layout: MLPLayout, grid: tuple[int, int] | None = None,
        placement: Placement = "parallel",
    ) -> None:
        super().__init__(base_layer, adapter)
        if layout not in get_args(MLPLayout):
            raise ValueError(f"unknown MLP layout {layout!r}; expected one of {get_args(MLPLayout)}")
        if placement not in ("parallel", "sequential"):
            raise ValueError(f"an MLP adapter runs in parallel or in sequence, not {placement!r}")
        self.layout = layout
        self.grid = grid
        self.placement = placement

    def extra_repr(self) -> str:
        return f"layout={self.layout!r}, grid={self.grid}, placement={self.placement!r}, enabled={self.enabled}"

    def forward(self, n: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(n)
        if not self.enabled:
            return out
        source = n if self.placement == "parallel" else out
        if self.layout == "nchw":
            return out + self.adapter(source)
        length, batch, dim = source.shape
        rows, cols = self._grid_for(length)
        feature_map = source.permute(1, 2, 0).reshape(batch, dim, rows, cols)
        correction = self.adapter(feature_map).reshape(batch, dim, length).permute(2, 0, 1)
        return out + correction

    def _grid_for(self, length: int) -> tuple[int, int]:
        if self.grid is not None:
            rows, cols = self.grid
            if rows * cols != length:
                raise ValueError(f"{length} tokens do not fill the adapter's {rows} x {cols} grid")
            return rows, cols
        side = math.isqrt(length)
        if side * side != length:
            raise ValueError(f"{length} tokens do not form a square grid; give AdaptedMLP a grid=(rows, cols)")
        return side, side


class AdaptedLayer(AdaptedModule):
    """One linear or convolution layer inside an MLP, computed through its adapter: `adapter(base_layer, x)`."""

    def extra_repr(self) -> str:
        return f"enabled={self.enabled}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base_layer, x) if self.enabled else self.base_layer(x)


def target_names(module: nn.Module, pattern: str) -> list[str]:
    """Qualified names of the MLPs: fullmatches of `pattern`, never nested in one another."""
    regex = re.compile(pattern)
    found: list[str] = []
    for name, _ in module.named_modules():
        # A match's sub-modules (an AdaptedMLP's base_layer, an MLP's own layers) are not targets.
        if not name or any(name.startswith(f"{target}.") for target in found):
            continue
        if regex.fullmatch(name):
            found.append(name)
    return found


def _unwrapped(module: nn.Module) -> nn.Module:
    return module.base_layer if isinstance(module, AdaptedModule) else module


def _dense_layers(mlp: nn.Module) -> dict[str, nn.Module]:
    """The linear and dense (groups = 1) convolution layers of an MLP, by name relative to it.

    Depthwise convolutions are left out: a low-rank update of a (c, 1, k, k) kernel saves nothing.
    Layers already wrapped by another method's adapter are seen through.
    """
    found: dict[str, nn.Module] = {}
    for name, child in mlp.named_modules():
        if not name or any(name.startswith(f"{known}.") for known in found):
            continue
        layer = _unwrapped(child)
        if isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1):
            found[name] = layer
    return found


def adapter_sites(module: nn.Module, descriptor: BaseDescriptor, placement: Placement) -> dict[str, nn.Module]:
    """Where a method's adapters go: qualified name -> the frozen module each one adapts.

    The MLPs for MLP placements; for "layers", the dense layers inside every MLP. Names are those
    of the bare base, whatever is injected at the moment.
    """
    mlps = {name: _unwrapped(module.get_submodule(name)) for name in target_names(module, descriptor.mlp_pattern)}
    if placement != "layers":
        return mlps
    return {f"{name}.{rel}": layer for name, mlp in mlps.items() for rel, layer in _dense_layers(mlp).items()}


def _build(method: Method, descriptor: BaseDescriptor, site: nn.Module, config: Any) -> nn.Module:
    return method.build(site if method.placement == "layers" else descriptor.mlp_dim, config)


def adapted_layers(module: nn.Module) -> dict[str, AdaptedModule]:
    return {name: child for name, child in module.named_modules() if isinstance(child, AdaptedModule)}


def injected_method(module: nn.Module) -> tuple[str, Any] | None:
    """(method name, config) of the adapters currently injected into `module`, or None."""
    return getattr(module, _INJECTION_ATTR, None)


def inject(module: nn.Module, descriptor: BaseDescriptor, method_name: str, config: Any = None) -> list[str]:
    """Wrap every site of `method_name` (MLPs, or the layers inside them) with a fresh adapter;
    returns the wrapped names.

    New adapters take the device, float dtype and train/eval mode of the module they wrap, so a
    frozen base in eval mode gets adapters whose BatchNorm uses its running statistics.
    """
    method = get_method(method_name)
    config = method.default_config() if config is None else config
    method.check_config(config)
    if adapted_layers(module):
        raise ValueError("adapters are already injected into this base; call remove_adapters() first")
    if method.placement != "layers" and descriptor.mlp_dim < 1:
        raise ValueError(
            f"the {descriptor.architecture} descriptor gives no MLP width (mlp_dim); cannot size adapters"
        )
    sites = adapter_sites(module, descriptor, method.placement)
    if not sites:
        raise ValueError(
            f"no {'layers inside ' if method.placement == 'layers' else ''}MLP modules matched "
            f"{descriptor.mlp_pattern!r} in this {descriptor.architecture} base; the descriptor's mlp_pattern "
            "must fullmatch qualified module names as listed by named_modules()"
        )
    for name, site in sites.items():
        adapter = _build(method, descriptor, site, config)
        reference = next((t for t in chain(site.parameters(), site.buffers()) if t.is_floating_point()), None)
        if reference is not None:
            adapter.to(device=reference.device, dtype=reference.dtype)
        adapter.train(site.training)
        if method.placement == "layers":
            wrapper: AdaptedModule = AdaptedLayer(site, adapter)
        else:
            wrapper = AdaptedMLP(site, adapter, descriptor.mlp_layout, placement=method.placement)
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, wrapper)
    setattr(module, _INJECTION_ATTR, (method_name, config))
    return list(sites)


def remove_adapters(module: nn.Module) -> list[str]:
    """Put every wrapped module back in place; returns the names that were unwrapped."""
    layers = adapted_layers(module)
    for name, layer in layers.items():
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, layer.base_layer)
    module.__dict__.pop(_INJECTION_ATTR, None)
    return list(layers)


def _require_adapters(module: nn.Module) -> dict[str, AdaptedMLP]:
    layers = adapted_layers(module)
    if not layers:
        raise ValueError("no adapters are injected into this module; call inject() first")
    return layers


def adapter_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every adapter tensor, buffers included (BatchNorm running statistics), keyed "{target}.{key}".

    The tensors are detached views of the live ones (no copy): clone them to keep a snapshot.
    """
    return {
        f"{name}.{key}": tensor
        for name, layer in adapted_layers(module).items()
        for key, tensor in layer.adapter.state_dict().items()
    }


def state_mismatches(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size]) -> list[str]:
    """Readable lines listing missing, unexpected and wrongly shaped keys; empty when `state` fits."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{key}: {tuple(state[key].shape)} vs {tuple(expected[key])} expected"
        for key in set(expected) & set(state)
        if state[key].shape != expected[key]
    )
    lines = []
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            shown = keys[:10] + ([f"... and {len(keys) - 10} more"] if len(keys) > 10 else [])
            lines.append(f"{title} ({len(keys)}): " + ", ".join(shown))
    return lines


def expected_adapter_shapes(
    module: nn.Module, descriptor: BaseDescriptor, method_name: str, config: Any
) -> dict[str, torch.Size]:
    """Shapes an adapter state of this method and config must have on this base.

    Read from the injected adapters when they are of the same method and config; otherwise from
    reference adapters built on the meta device (no memory, no initialisation cost).
    """
    if injected_method(module) == (method_name, config):
        return {key: tensor.shape for key, tensor in adapter_state_dict(module).items()}
    method = get_method(method_name)
    method.check_config(config)
    shapes = {}
    for name, site in adapter_sites(module, descriptor, method.placement).items():
        with torch.device("meta"):
            reference = _build(method, descriptor, site, config)
        shapes.update({f"{name}.{key}": tensor.shape for key, tensor in reference.state_dict().items()})
    return shapes


def load_adapter_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy `state` into the injected adapters in place; strict: every key present, no extra, same shapes."""
    _require_adapters(module)
    current = adapter_state_dict(module)
    problems = state_mismatches(state, {key: tensor.shape for key, tensor in current.items()})
    if problems:
        raise AdapterMismatchError(
            "the adapter state does not fit the injected adapters:\n  " + "\n  ".join(problems)
        )
    with torch.no_grad():
        for key, tensor in current.items():
            tensor.copy_(state[key])


def set_adapters_enabled(module: nn.Module, enabled: bool) -> None:
    """Switch every injected adapter on or off; off computes exactly the base."""
    for layer in adapted_layers(module).values():
        layer.enabled = enabled


def mark_only_adapters_trainable(module: nn.Module) -> int:
    """Freeze the base and unfreeze the adapters; returns the number of trainable parameters."""
    layers = _require_adapters(module)
    module.requires_grad_(False)
    for layer in layers.values():
        layer.adapter.requires_grad_(True)
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def train_adapters(module: nn.Module) -> None:
    """Train mode for the adapters only; the base stays in eval mode.

    `module.train()` would be wrong: a base's own BatchNorm (EMT) would then normalise with batch
    statistics and update its running statistics, changing the frozen base's function.
    """
    layers = _require_adapters(module)
    module.eval()
    for layer in layers.values():
        layer.adapter.train()
