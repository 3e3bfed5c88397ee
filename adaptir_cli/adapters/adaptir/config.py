"""Hyper-parameters of one AdaptIR adapter, and how its widths follow from the base's width d."""

from __future__ import annotations

from dataclasses import dataclass, field

from adaptir_cli.adapters.fields import MIN_HIDDEN, check_config_fields, default_hidden, reduced


@dataclass(frozen=True)
class AdaptIRConfig:
    """Widths of an AdaptIR adapter (`None` derives the value from the base's MLP width d), and the
    switches of the paper's ablations (all on: the full method)."""

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
        default=MIN_HIDDEN,
        metadata={"help": "floor of the default hidden width, so that h // 8 stays >= 1 on small bases"},
    )
    local: bool = field(default=True, metadata={"help": "the local branch (LIM); false: ablation 'w/o LIM'"})
    frequency: bool = field(
        default=True, metadata={"help": "the frequency branch (FAM); false: ablation 'w/o FAM'"}
    )
    channel: bool = field(
        default=True, metadata={"help": "the channel score (CGM); false: ablation 'w/o CGM'"}
    )
    ensemble: bool = field(
        default=True,
        metadata={"help": "the gated adaptive ensemble; false: the branches are simply summed (ablation)"},
    )
    batch_norm: bool = field(
        default=True,
        metadata={
            "help": "the down-projection's BatchNorm, as in the paper; false: a per-pixel channel LayerNorm, "
            "the same in training and inference (BatchNorm's running statistics cost EMT x4 adapters "
            "2.5 dB at inference, docs/training.md)"
        },
    )

    def __post_init__(self) -> None:
        check_config_fields(self)
        if not (self.local or self.frequency):
            raise ValueError("AdaptIRConfig needs the local or the frequency branch (local or frequency true)")

    def hidden_width(self, dim: int) -> int:
        return self.hidden if self.hidden is not None else default_hidden(dim, self.min_hidden)

    def rank_for(self, hidden: int) -> int:
        return self.rank if self.rank is not None else reduced(hidden, 2)
