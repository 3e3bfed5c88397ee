"""Hyper-parameters of one AdaptIR adapter, and how its widths follow from the base's width d."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

# The paper sizes the hidden width as d // 24 (IPT: 576 -> 24, 0.6 % of the base's parameters).
HIDDEN_DIVISOR = 24


def reduced(width: int, factor: int) -> int:
    """`width // factor`, floored at 1: small bases (d = 36, 60) would otherwise get 0-wide layers."""
    return max(1, width // factor)


@dataclass(frozen=True)
class AdaptIRConfig:
    """Widths of an AdaptIR adapter; `None` derives the value from the base's MLP width d."""

    hidden: int | None = field(
        default=None,
        metadata={
            "help": "hidden width h of the adapter; default max(min_hidden, d // 24). The paper used "
            "13 (SR), 18 (denoise, light rain), 24 (hybrid, low light) and 32 (heavy rain)."
        },
    )
    rank: int | None = field(
        default=None,
        metadata={"help": "rank r of the local branch's low-rank 3x3 depthwise kernel; default h // 2"},
    )
    min_hidden: int = field(
        default=8,
        metadata={"help": "floor of the default hidden width, so that h // 8 stays >= 1 on small bases"},
    )

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is None and spec.name != "min_hidden":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AdaptIRConfig.{spec.name} must be a positive integer, got {value!r}")

    def hidden_width(self, dim: int) -> int:
        return self.hidden if self.hidden is not None else max(self.min_hidden, dim // HIDDEN_DIVISOR)

    def rank_for(self, hidden: int) -> int:
        return self.rank if self.rank is not None else reduced(hidden, 2)
