"""The training loop shared by `adaptir finetune` (adapters) and `adaptir pretrain` (whole bases).

One step: this process's slice of the global batch, L1 loss in the [0, 1] pixel scale (plus the
phase loss of training/losses.py when `phase_loss` is set), AdamW
with the learning rate the schedule gives for the step, gradient clipping. bf16 autocast on CUDA
for bases verified in bf16 (parameters and optimizer stay float32), fp32 otherwise and on the
CPU. The caller decides what trains (which tensors require gradients, which modules are in
train mode) through a `Trainee`.

On CUDA a step never waits for the GPU: the loss stays on the device and is read (one collective
and one wait) every progress interval, batches come from pinned memory, trainable BatchNorm
reduces its sums on the device (training/batchnorm.py) and DDP broadcasts no buffers. The history
still holds every step's loss.

Ctrl-C (SIGINT) or SIGTERM (what torchrun sends its workers) does not kill the run: the current
step finishes, every process agrees to stop at the same step, a checkpoint is saved and
`TrainingInterrupted` is raised (the commands exit 130). A second Ctrl-C quits at once.
"""

from __future__ import annotations

import inspect
import platform
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from rich.console import Console
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from adaptir_cli import __version__
from adaptir_cli.atomic_files import remove_stale_temporaries
from adaptir_cli.bases.descriptor import BaseDescriptor
from adaptir_cli.runtime import Precision, accelerator_info, apply_tf32_policy, autocast, resolve_precision
from adaptir_cli.training.checkpoint import (
    Checkpoint,
    History,
    ResumeError,
    check_resumable,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from adaptir_cli.distributed import Distributed, all_reduce_sum, any_process, barrier
from adaptir_cli.training.batchnorm import use_global_batchnorm
from adaptir_cli.training.progress import TrainingProgress
from adaptir_cli.training.sampling import Batch, BatchSampler, BatchStream, TaskData
from adaptir_cli.training.data import default_workers
from adaptir_cli.training.losses import training_loss
from adaptir_cli.training.schedule import Schedule, default_warmup
from adaptir_cli.training.validation import ValidationSet, evaluate, mean_psnr


# Defaults of `adaptir finetune`'s loop flags (also what an experiment's [train] leaves out means).
# The learning rate is for a user's few hundred CPU steps, not the paper's 500 epochs at 1e-4:
# docs/training.md, "Defaults for a user's budget". `adaptir pretrain` has its own (PRETRAIN_LR).
FINETUNE_DEFAULTS: dict[str, Any] = {
    "steps": 5000, "batch": 16, "patch": 48, "lr": 1e-3, "schedule": "cosine", "warmup": None,
    "weight_decay": 0.0, "grad_clip": 1.0, "phase_loss": 2.0, "seed": 0, "val_every": 500, "checkpoint_every": 500,
    "precision": "auto", "workers": None,
}
PRETRAIN_LR = 2e-4


@dataclass(frozen=True)
class LoopSettings:
    steps: int
    batch: int  # per process; the global batch is batch x processes
    patch: int  # input (LR) crop side; the target crop is patch x scale
    lr: float
    schedule: Schedule
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    phase_loss: float = 0.0  # weight of training/losses.py's phase loss; 0: L1 alone
    seed: int = 0
    val_every: int = 0  # 0: validate once, at the end
    checkpoint_every: int = 0  # 0: checkpoint only when interrupted
    precision: str = "auto"  # auto: bf16 autocast on CUDA where the base allows it, else fp32
    workers: int = 0  # threads decoding images; > 0 also cuts the next step's crops ahead

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "patch"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ("val_every", "checkpoint_every", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.phase_loss < 0:
            raise ValueError("--lr must be positive; --weight-decay, --grad-clip and --phase-loss must be 0 or more")
        if self.schedule.steps != self.steps:
            raise ValueError(f"the schedule covers {self.schedule.steps} steps but the run has {self.steps}")

    @classmethod
    def from_options(cls, **options: Any) -> "LoopSettings":
        """Settings from flag-like values (`schedule` by name, `warmup` None for the default),
        FINETUNE_DEFAULTS filling what is not given; raises ValueError for invalid values."""
        values = {**FINETUNE_DEFAULTS, **options}
        warmup = values.pop("warmup")
        steps = values["steps"]
        values["schedule"] = Schedule(values["schedule"], steps, default_warmup(steps) if warmup is None else warmup)
        if values["workers"] is None:
            values["workers"] = default_workers()
        return cls(**values)

    def identity(self, world: int) -> dict[str, Any]:
        """The settings a resume must keep. Only the global batch counts: a run may resume with
        another number of processes, and sees the same samples (training/sampling.py)."""
        identity = {
            "steps": self.steps, "global_batch": self.batch * world, "patch": self.patch, "lr": self.lr,
            "schedule": self.schedule.to_json(), "weight_decay": self.weight_decay, "grad_clip": self.grad_clip,
            "seed": self.seed,
        }
        # Only when set: runs of plain L1, as all were before the option, keep their identity.
        return {**identity, "phase_loss": self.phase_loss} if self.phase_loss else identity

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "schedule": self.schedule.to_json()}


@dataclass
class Trainee:
    """What the loop trains: a module (moved to the device by the loop) and how to handle it."""

    module: nn.Module
    descriptor: BaseDescriptor  # pixel range and input-size rules of the module
    tasks: list[TaskData]
    validation: list[ValidationSet]
    set_train_mode: Callable[[nn.Module], None]
    # The tensors a checkpoint keeps (buffers included) and how to put them back.
    trainable_state: Callable[[], Mapping[str, torch.Tensor]]
    load_trainable_state: Callable[[Mapping[str, torch.Tensor]], None]
    # Pre-training runs one head per step: the other heads get no gradient, which DDP must expect.
    find_unused_parameters: bool = False


@dataclass
class TrainResult:
    history: History
    steps: int
    trainable_parameters: int
    world: int
    device: str
    precision: Precision

    @property
    def final_validation(self) -> dict[str, dict[str, float]] | None:
        return self.history.validations[-1]["tasks"] if self.history.validations else None

    @property
    def start_validation(self) -> dict[str, dict[str, float]] | None:
        """The validation before the first step (`validate_start`), if there was one."""
        first = self.history.validations[0] if self.history.validations else None
        return first["tasks"] if first is not None and first["step"] == 0 and self.steps > 0 else None

    def summary(self, settings: LoopSettings) -> dict[str, Any]:
        """The run's settings and outcome, for its log and its output's metadata."""
        return {
            "steps": settings.steps, "batch": settings.batch, "global_batch": settings.batch * self.world,
            "patch": settings.patch, "lr": settings.lr, "schedule": settings.schedule.to_json(), "seed": settings.seed,
            "start_validation": self.start_validation, "final_validation": self.final_validation,
            "best_validation": self.history.best,
            "seconds": self.history.seconds, "trainable_parameters": self.trainable_parameters,
            "environment": self.environment(),
        }

    def environment(self) -> dict[str, Any]:
        """Versions and hardware for the logs: speeds and even results depend on them."""
        device = torch.device(self.device)
        return {
            "adaptir": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": self.device, "precision": self.precision, "processes": self.world,
            **accelerator_info(device),
        }


class TrainingInterrupted(Exception):
    """The run stopped on request after saving a checkpoint it can `--resume` from."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"training interrupted after step {step}; checkpoint saved to {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint


class StopRequest:
    """SIGINT/SIGTERM set `requested`; a second SIGINT raises KeyboardInterrupt (quit, no save)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


StepCallback = Callable[[int], None]


def train(
    trainee: Trainee,
    settings: LoopSettings,
    context: Distributed,
    *,
    checkpoint: Path,
    identity: Mapping[str, Any],
    resume: bool = False,
    title: str = "training",
    console: Console | None = None,
    show_progress: bool = True,
    on_step: StepCallback | None = None,
    validate_start: bool = False,
) -> TrainResult:
    """Train `trainee` for `settings.steps` steps (from the checkpoint's step with `resume`).

    `identity` names what is trained (base, task, data, ...); with the loop's own settings it
    must match the checkpoint's to resume. `on_step(done)` runs after each optimizer step.
    `validate_start` also validates before the first step: for an adapter (the identity at
    initialisation) that is the bare base's score, the number the adapter has to beat.
    Raises TrainingInterrupted after saving a checkpoint when asked to stop.
    """
    device = context.device
    module = trainee.module.to(device)
    if context.active:
        use_global_batchnorm(module)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter of the module requires a gradient")
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    identity = {**identity, **settings.identity(context.world)}
    history, start = _start_or_resume(trainee, optimizer, checkpoint, identity, resume)
    model = _data_parallel(module, context, trainee.find_unused_parameters) if context.active else module
    # As in restore, `auto` is bf16 only on CUDA and only for bases verified in bf16: training the
    # adapters of a base whose bf16 function differs (EMT's attention logits) would teach them to
    # correct bf16 errors that the fp32 inference never makes. Validation measures what restore runs.
    precision = resolve_precision(settings.precision, device, trainee.descriptor.supports_bf16)
    apply_tf32_policy(precision)
    val_precision = resolve_precision("auto", device, trainee.descriptor.supports_bf16)
    pixel_range = trainee.descriptor.pixel_range
    sampler = BatchSampler(trainee.tasks, settings.patch, settings.batch * context.world, settings.seed)
    indices = range(context.rank * settings.batch, (context.rank + 1) * settings.batch)
    progress = TrainingProgress(
        console or Console(stderr=True), title, settings.steps, start, enabled=show_progress and context.main
    )
    seconds_before, session_start = history.seconds, time.perf_counter()

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - session_start

    def validate(done: int) -> None:
        module.eval()
        results = evaluate(
            lambda x, head: module(x * pixel_range, head) / pixel_range,
            trainee.validation, trainee.descriptor, device, val_precision, context,
        )
        score = mean_psnr(results)
        history.validations.append({"step": done, "seconds": elapsed(), "tasks": results, "psnr": score})
        if history.best is None or score > history.best["psnr"]:
            history.best = {"step": done, "psnr": score}
        progress.validated(done, score, history.best["psnr"], history.best["step"])

    # This process's losses of the steps not read yet, kept on the device: reading a CUDA tensor on
    # the host waits for the GPU to finish the step, so losses are read once per progress line.
    unread: list[torch.Tensor] = []

    def read_losses() -> None:
        """Move the unread losses, averaged over the processes, into the history (one collective)."""
        if unread:
            sums = all_reduce_sum(torch.stack(unread).double(), context).tolist()
            history.losses.extend(loss_sum / context.world for loss_sum in sums)
            unread.clear()

    def save(done: int) -> None:
        read_losses()  # the checkpoint's history holds every step's loss
        history.seconds = elapsed()
        if context.main:
            save_checkpoint(checkpoint, Checkpoint(
                step=done, identity=identity, trainable=dict(trainee.trainable_state()),
                optimizer=optimizer.state_dict(), rng=rng_state(), history=history,
            ))
        barrier(context)  # nobody leaves before the checkpoint is on disk

    pin = device.type == "cuda"  # pinned host memory makes the non-blocking copies below asynchronous
    with StopRequest() as stop, BatchStream(sampler, indices, settings.steps, settings.workers, pin) as stream, progress:
        if trainee.validation and validate_start and start == 0:
            validate(0)
        for step in range(start, settings.steps):
            trainee.set_train_mode(module)
            lr = settings.lr * settings.schedule.factor(step)
            loss = _optimizer_step(model, stream.get(step), optimizer, params, lr, settings, device, precision,
                                   pixel_range)
            done = step + 1
            if on_step is not None:
                on_step(done)
            unread.append(loss.detach())
            # Every process stops at the same step; the flag is a host value, so asking costs no GPU wait.
            stops = any_process(stop.requested, context)
            shown = done % progress.every == 0 or done == settings.steps
            if shown:
                read_losses()
            progress.step(done, history.losses[-1] if shown else None, lr)
            if trainee.validation and (done == settings.steps or (settings.val_every and done % settings.val_every == 0)):
                validate(done)
            if done == settings.steps:
                break  # finished: a stop request now changes nothing
            if stops or (settings.checkpoint_every and done % settings.checkpoint_every == 0):
                save(done)
            if stops:
                progress.note(f"Stopped after step {done}; checkpoint saved to {checkpoint}.")
                raise TrainingInterrupted(done, checkpoint)
    history.seconds = elapsed()
    return TrainResult(
        history=history,
        steps=settings.steps,
        trainable_parameters=sum(p.numel() for p in params),
        world=context.world,
        device=str(device),
        precision=precision,
    )


def _start_or_resume(
    trainee: Trainee, optimizer: torch.optim.Optimizer, checkpoint: Path, identity: Mapping[str, Any], resume: bool,
) -> tuple[History, int]:
    """A fresh history at step 0, or the checkpoint's (weights, optimizer, RNG and history restored)."""
    remove_stale_temporaries(checkpoint.parent)  # what a kill -9 during a save left
    if not resume and checkpoint.exists():
        raise ResumeError(
            f"an interrupted run left a checkpoint at {checkpoint}\n"
            "Hint: add --resume to continue it, or delete the file to start afresh."
        )
    if not resume:
        return History(), 0
    saved = load_checkpoint(checkpoint)
    check_resumable(saved, dict(identity), checkpoint)
    trainee.load_trainable_state(saved.trainable)
    optimizer.load_state_dict(saved.optimizer)
    restore_rng(saved.rng)
    return saved.history, saved.step


def _optimizer_step(
    model: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], lr: float,
    settings: LoopSettings, device: torch.device, precision: Precision, pixel_range: float,
) -> torch.Tensor:
    """One step on `batch` at learning rate `lr`; returns the loss, still on the device."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    lq, gt = batch.lq.to(device, non_blocking=True), batch.gt.to(device, non_blocking=True)
    with autocast(device, precision):
        output = model(lq * pixel_range, batch.head_index) / pixel_range
    loss = training_loss(output.float(), gt, settings.phase_loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if settings.grad_clip > 0:
        nn.utils.clip_grad_norm_(params, settings.grad_clip)
    optimizer.step()
    return loss


# Buffers are identical in every process anyway (trainable BatchNorm keeps global statistics,
# frozen buffers never change), so DDP's buffer broadcast before each forward would only cost a
# collective over every buffer of the frozen base per step: it is turned off. torch 2.13 renamed
# the switch (the new one still syncs once, at construction: harmless, the buffers are equal).
NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


def _data_parallel(module: nn.Module, context: Distributed, find_unused_parameters: bool) -> nn.Module:
    return DistributedDataParallel(
        module,
        device_ids=[context.device.index] if context.device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
        **NO_BUFFER_SYNC,
    )
