"""Training progress on stderr: a live rich bar on a terminal, plain periodic lines elsewhere.

Under torchrun, nohup or a CI log, stderr is no terminal and a live display would only show its
final state; those runs get one line every 1 % of the steps and one per validation instead.
"""

from __future__ import annotations

import time
from collections import deque

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Speed is averaged over the last 50 steps: steady, and a validation pause soon fades out of it.
_SPEED_WINDOW = 50
_PLAIN_LINES = 100


class TrainingProgress:
    def __init__(self, console: Console, title: str, steps: int, start: int, enabled: bool = True) -> None:
        self.console = console
        self.steps = steps
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        # Steps between plain lines, and between loss readings: the loop reads the loss (a wait
        # for the GPU) only at these steps, so the live display's loss changes at the same pace.
        self.every = max(1, steps // _PLAIN_LINES)
        self.loss = "-"
        self.times: deque[tuple[int, float]] = deque([(start, time.perf_counter())], maxlen=_SPEED_WINDOW)
        self.validation = "val -"
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]}  {task.fields[val]}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, disable=not self.live,
        )
        self.task = self.progress.add_task(title, total=steps, completed=start, loss="-", lr="-", speed="-", val=self.validation)

    def __enter__(self) -> "TrainingProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def speed(self) -> float:
        (first_step, first_time), (last_step, last_time) = self.times[0], self.times[-1]
        return (last_step - first_step) / (last_time - first_time) if last_time > first_time else 0.0

    def step(self, step: int, loss: float | None, lr: float) -> None:
        """Report that `step` steps are done, the last with this learning rate and loss (None: not
        read at this step; the last one read stays shown)."""
        self.times.append((step, time.perf_counter()))
        if loss is not None:
            self.loss = f"{loss:.4f}"
        fields = {"loss": self.loss, "lr": f"{lr:.2e}", "speed": f"{self.speed():.2f} steps/s", "val": self.validation}
        if self.live:
            self.progress.update(self.task, completed=step, **fields)
        elif self.enabled and (step % self.every == 0 or step == self.steps):
            self.console.print(
                f"step {step}/{self.steps}  loss {fields['loss']}  lr {fields['lr']}  {fields['speed']}  {self.validation}",
                highlight=False,
            )

    def validated(self, step: int, psnr: float, best_psnr: float, best_step: int) -> None:
        self.validation = f"val {psnr:.2f} dB (best {best_psnr:.2f} @ {best_step})"
        if self.live:
            self.progress.update(self.task, val=self.validation)
        elif self.enabled:
            self.console.print(f"step {step}/{self.steps}  {self.validation}", highlight=False)

    def note(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False)
