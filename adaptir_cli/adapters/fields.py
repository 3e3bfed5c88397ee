"""What every method config shares: widths derived from the base, and typed, validated fields.

Configs are frozen dataclasses whose fields are ints (positive; `None` where derived from the
base), floats (finite) or bools. The types are read from the annotations, so one checker and one
command-line parser (`--set KEY=VALUE`) serve every method.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields
from typing import Any

# The paper sizes the hidden width as d // 24 (IPT: 576 -> 24, 0.6 % of the base's parameters).
HIDDEN_DIVISOR = 24
# Floor of derived hidden widths: small bases (d = 36, 60) would otherwise get 1-2 wide layers.
MIN_HIDDEN = 8


def reduced(width: int, factor: int) -> int:
    """`width // factor`, floored at 1: small bases would otherwise get 0-wide layers."""
    return max(1, width // factor)


def default_hidden(dim: int, min_hidden: int = MIN_HIDDEN) -> int:
    return max(min_hidden, dim // HIDDEN_DIVISOR)


def field_types(config_class: type) -> dict[str, type]:
    """Field name -> its plain type (int, float or bool); `int | None` gives int."""
    hints = typing.get_type_hints(config_class)
    plain = {}
    for spec in fields(config_class):
        hint = hints[spec.name]
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        plain[spec.name] = hint
    return plain


def check_config_fields(config: Any) -> None:
    """Raise ValueError naming the field when a value does not fit its type (called in __post_init__)."""
    name = type(config).__name__
    for field, kind in field_types(type(config)).items():
        value = getattr(config, field)
        if value is None:
            continue
        if kind is bool:
            ok = isinstance(value, bool)
            expected = "true or false"
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            expected = "a positive integer"
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            expected = "a finite number"
        if not ok:
            raise ValueError(f"{name}.{field} must be {expected}, got {value!r}")


def parse_field(config_class: type, field: str, text: str) -> Any:
    """Turn the text of a `--set KEY=VALUE` into the field's type; ValueError says what fits."""
    kinds = field_types(config_class)
    if field not in kinds:
        raise ValueError(f"{config_class.__name__} has no field {field!r}; its fields: {', '.join(kinds)}")
    kind = kinds[field]
    if text.lower() in ("none", "default"):
        return None
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{field} takes true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{field} takes {'an integer' if kind is int else 'a number'}, got {text!r}") from None
