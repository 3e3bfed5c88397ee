"""The evaluation protocol of a task (METHOD.md section 6): what makes numbers comparable with papers.

SR and the x4 hybrids are measured on the Y channel with `scale` border pixels cropped, deraining
on Y without crop, everything else (denoising, low light, JPEG) on RGB without crop. The channel
and crop depend on the task, not on the set: Urban100 is measured on Y for SR and on RGB for
color denoising.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from adaptir_cli.data.degradations import Degradation, add_gaussian_noise, get_degradation
from adaptir_cli.tasks import Task, get_task

Channel = Literal["y", "rgb"]
CHANNELS: tuple[Channel, ...] = ("y", "rgb")

# Noise levels fixed by the task's definition; plain "denoise" takes its level from --sigma.
_FIXED_SIGMA = {"denoise30": 30.0, "denoise50": 50.0, "lr4-noise30": 30.0}
_DENOISE_TASKS = ("denoise", "denoise30", "denoise50")


class ProtocolError(ValueError):
    """The task and options do not make a protocol (a usage error); the message says why."""


@dataclass(frozen=True)
class Protocol:
    task: str
    channel: Channel  # the channel papers report for this task; the other one is measured too
    crop: int  # border pixels left out of every metric
    scale: int
    sigma: float | None  # Gaussian noise level on the 0..255 scale, where the task adds noise
    seed: int
    degradation: str  # how inputs are made from clean images (sets with given pairs ignore it)

    @property
    def other_channel(self) -> Channel:
        return "rgb" if self.channel == "y" else "y"

    def describe(self) -> str:
        parts = [f"{self.channel.upper()} channel", f"crop {self.crop} px"]
        if self.scale > 1:
            parts.append(f"x{self.scale} MATLAB bicubic (antialiased, a = -0.5) on mod-{self.scale} HR")
        if self.sigma is not None:
            parts.append(f"sigma {self.sigma:g}")
        parts.append(f"seed {self.seed} (+ image index)")
        return ", ".join(parts)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def default_channel_and_crop(task: Task) -> tuple[Channel, int]:
    if task.scale > 1:
        return "y", task.scale
    if task.name.startswith("derain"):
        return "y", 0
    return "rgb", 0


def make_protocol(task_name: str, sigma: float | None = None, seed: int = 0) -> tuple[Protocol, Degradation]:
    """The protocol and the degradation that makes a task's inputs from clean images."""
    task = get_task(task_name)
    channel, crop = default_channel_and_crop(task)
    fixed = _FIXED_SIGMA.get(task.name)
    if task.name in _DENOISE_TASKS:
        if sigma is None and fixed is None:
            raise ProtocolError("--task denoise needs --sigma N (15, 25 and 50 are the levels papers report)")
        if sigma is not None and fixed is not None and sigma != fixed:
            raise ProtocolError(f"--task {task.name} is sigma {fixed:g}; use --task denoise --sigma {sigma:g}")
        level = fixed if sigma is None else sigma
        if level <= 0:
            raise ProtocolError(f"--sigma must be positive, got {level:g}")
        degradation = Degradation(
            f"denoise{level:g}", 1, f"Gaussian noise sigma {level:g} (0..255 scale), clipped, not quantised",
            lambda img, rng: add_gaussian_noise(img, level, rng),
        )
    else:
        if sigma is not None:
            raise ProtocolError(f"--sigma applies to the denoising tasks only, not to {task.name}")
        level = fixed
        degradation = get_degradation(task.name)
    protocol = Protocol(task.name, channel, crop, task.scale, level, seed, degradation.description)
    return protocol, degradation
