"""The registry of PETL methods: each knows its config class and builds one adapter module.

An adapter module maps a feature map (N, d, H, W) to a correction of the same shape; injection
(adapters/injection.py) places one beside every MLP of a base. A new method adds one folder with
its config and layer, and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from adaptir_cli.adapters.adaptir import AdaptIR, AdaptIRConfig
from adaptir_cli.adapters.errors import UnknownMethodError


@dataclass(frozen=True)
class Method:
    name: str
    # A frozen dataclass: configs are compared (hot-swap reuses modules when they are equal) and
    # stored as JSON in adapter files.
    config_class: type
    build: Callable[[int, Any], nn.Module]
    description: str

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
            description="AdaptIR: adaptive mixture of local, frequency and channel experts",
        ),
    )
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownMethodError(f"unknown adapter method {name!r}; known methods: {', '.join(METHODS)}") from None
