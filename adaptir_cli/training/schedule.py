"""Learning-rate schedules as pure functions of the step.

No scheduler object carries state: the learning rate of step t is `lr * schedule.factor(t)`, so
a resumed run only needs the step to be back on the same curve, and the schedule written in a
checkpoint or log says everything about it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

ScheduleKind = Literal["cosine", "multistep"]
SCHEDULES: tuple[ScheduleKind, ...] = ("cosine", "multistep")
# The paper halves the learning rate at epochs 250, 400, 450 and 475 of 500 (METHOD.md section 5).
PAPER_MILESTONES = (0.5, 0.8, 0.9, 0.95)
PAPER_GAMMA = 0.5


def default_warmup(steps: int) -> int:
    """5 % of the run, at most 1000 steps: enough for AdamW's moment estimates to settle."""
    return min(1000, steps // 20)


@dataclass(frozen=True)
class Schedule:
    """Linear warm-up from lr/warmup to lr over `warmup` steps, then cosine decay to 0 or steps
    of `gamma` at the `milestones` (fractions of `steps`)."""

    kind: ScheduleKind
    steps: int
    warmup: int = 0
    milestones: tuple[float, ...] = PAPER_MILESTONES
    gamma: float = PAPER_GAMMA

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; use one of {', '.join(SCHEDULES)}")
        if self.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {self.steps}")
        if not 0 <= self.warmup < self.steps:
            raise ValueError(f"--warmup must be in [0, steps), got {self.warmup} for {self.steps} steps")
        if any(not 0.0 < m < 1.0 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing fractions of the run in (0, 1), got {self.milestones}")

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate at `step` (0-based)."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "cosine":
            progress = (step - self.warmup) / max(1, self.steps - self.warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        passed = sum(step >= round(m * self.steps) for m in self.milestones)
        return self.gamma**passed

    def to_json(self) -> dict[str, object]:
        return asdict(self)
