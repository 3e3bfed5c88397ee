"""The registry of PETL methods: each knows its config class, where it sits, and builds its modules.

Where a method sits (its `placement`; adapters/injection.py does the wrapping):
  "parallel"   - beside each MLP, fed with the MLP's input: out = MLP(n) + f(n) (AdaptIR, AdaptFormer);
  "sequential" - after each MLP, fed with its output: out = y + f(y), y = MLP(n) (Adapter);
  "layers"     - inside each MLP, on every linear / 1x1-or-larger dense convolution: the module
                 gets the frozen layer and its input and returns the layer's new output (LoRA, SSF).
MLP-level modules are built from the MLP width d and map a feature map (N, d, H, W) to a
correction of the same shape; layer-level modules are built from the layer they adapt (shapes
only, it is not stored). A new method adds one folder with its config and layer, and one entry here.
"""


from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from torch import nn

from adaptir_cli.adapters.adaptformer import AdaptFormerConfig, adaptformer
from adaptir_cli.adapters.adaptir import AdaptIR, AdaptIRConfig
from adaptir_cli.adapters.bottleneck import Bottleneck, BottleneckConfig
from adaptir_cli.adapters.errors import UnknownMethodError
from adaptir_cli.adapters.fields import parse_field
from adaptir_cli.adapters.lora import LoRA, LoRAConfig
from adaptir_cli.adapters.ssf import SSF, SSFConfig

Placement = Literal["parallel", "sequential", "layers"]


@dataclass(frozen=True)
class Method:
    name: str
    # A frozen dataclass: configs are compared (hot-swap reuses modules when they are equal) and
    # stored as JSON in adapter files.
    config_class: type
    # (d, config) for MLP placements; (the frozen layer, config) for "layers".
    build: Callable[[Any, Any], nn.Module]
    description: str
    placement: Placement = "parallel"

    def default_config(self) -> Any:
        return self.config_class()

    def config_to_dict(self, config: Any) -> dict[str, Any]:
        self.check_config(config)
        return asdict(config)

    def config_from_dict(self, data: Mapping[str, Any]) -> Any:
        """Rebuild a config stored in a file; unknown or invalid fields raise ValueError."""
        try:
            return self.config_class(**data)
        except TypeError as error:  # unknown field names
            raise ValueError(f"invalid {self.name} config {dict(data)}: {error}") from None

    def fields_from_strings(self, values: Mapping[str, str]) -> dict[str, Any]:
        """Command-line `KEY=VALUE` texts, each converted to its field's type (ValueError if it has none)."""
        return {key: parse_field(self.config_class, key, text) for key, text in values.items()}

    def config_from_strings(self, values: Mapping[str, str]) -> Any:
        """A config from command-line `KEY=VALUE` texts, each converted to its field's type."""
        return self.config_from_dict(self.fields_from_strings(values))

    def check_config(self, config: Any) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"method {self.name!r} takes a {self.config_class.__name__}, got {type(config).__name__}"
            )


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            name="adaptir",
            config_class=AdaptIRConfig,
            build=AdaptIR,
            description="AdaptIR: adaptive mixture of local, frequency and channel experts beside each MLP",
        ),
        Method(
            name="lora",
            config_class=LoRAConfig,
            build=LoRA,
            description="LoRA: low-rank updates of the weights of each MLP's layers",
            placement="layers",
        ),
        Method(
            name="adapter",
            config_class=BottleneckConfig,
            build=Bottleneck,
            description="Adapter: a GELU bottleneck after each MLP, with a residual",
            placement="sequential",
        ),
        Method(
            name="adaptformer",
            config_class=AdaptFormerConfig,
            build=adaptformer,
            description="AdaptFormer: a scaled ReLU bottleneck beside each MLP",
        ),
        Method(
            name="ssf",
            config_class=SSFConfig,
            build=SSF,
            description="SSF: a learned scale and shift of every output channel of each MLP's layers",
            placement="layers",
        ),
    )
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownMethodError(f"unknown adapter method {name!r}; known methods: {', '.join(METHODS)}") from None
