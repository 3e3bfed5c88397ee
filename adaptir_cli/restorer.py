"""Restoring images with one loaded base and swappable adapters: the library behind `adaptir restore`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from adaptir_cli.adapters import AdapterFile, apply_adapter, check_task, read_adapter
from adaptir_cli.bases import LoadedBase
from adaptir_cli.imaging.tiling import RegionSink, run_tiled
from adaptir_cli.runtime import apply_tf32_policy, autocast, is_out_of_memory, resolve_device, resolve_precision
from adaptir_cli.tasks import Task, get_task, head_for

TileCallback = Callable[[int, int], None]

# 512 px tiles keep the activations of a tile within a few hundred MB (docs/performance.md) while
# recomputing little: with the bases' overlaps, 14 % (EMT, CompactIR) to 31 % (LMLT) of a large image.
DEFAULT_TILE = 512
# Tiles run together by default. A CPU is kept busy by one 512 px tile, and four of them hold
# four times the activations (CompactIR x2: 2.4 GB against 0.8 GB), so a CPU runs one at a time.
DEFAULT_BATCH = {"cpu": 1, "cuda": 4}


class RestoreError(RuntimeError):
    """An image could not be restored; the message says why."""


@dataclass
class TileSettings:
    """`tile=None` / `overlap=None` take the base's defaults, `batch=None` the device's;
    `tile=0` runs whole images."""

    tile: int | None = None
    overlap: int | None = None
    batch: int | None = None


@dataclass
class RestoreStats:
    tile: int = 0
    tiles: int = 0
    fp32_recomputed: int = 0
    oom_retries: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class Restorer:
    """Holds one frozen base on its device; `use()` switches task and adapter between images."""

    def __init__(self, base: LoadedBase, device: str = "auto", precision: str = "auto") -> None:
        self.base = base
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device, base.descriptor.supports_bf16)
        apply_tf32_policy(self.precision)
        base.module.to(self.device)
        self.task: Task | None = None
        self.head = ""
        self.adapter: AdapterFile | None = None

    @property
    def scale(self) -> int:
        return self.base.descriptor.head(self.head).scale

    def use(self, task: str, adapter: Path | AdapterFile | None = None, *, force: bool = False) -> None:
        """Select the task (and so the base head) and the adapter; None runs the bare head.

        `force` runs an adapter trained on other base weights, or for another task.
        """
        chosen = get_task(task)
        head = head_for(chosen, self.base.descriptor.heads)
        if self.base.descriptor.head(head).scale != chosen.scale:
            raise RestoreError(
                f"task {chosen.name} needs scale x{chosen.scale} but head {head!r} of {self.base.name} "
                f"is x{self.base.descriptor.head(head).scale}"
            )
        if isinstance(adapter, (str, Path)):
            adapter = read_adapter(Path(adapter))
        if adapter is not None:
            check_task(adapter, chosen.name, force)
        if adapter is None and chosen.adapter_required:
            raise RestoreError(
                f"{self.base.name} was not trained for {chosen.name} and no adapter was given; "
                "pass --adapter FILE (train one with `adaptir finetune`)"
            )
        apply_adapter(self.base, adapter, force=force)
        self.base.module.to(self.device)  # freshly built adapter modules start on the CPU
        self.task, self.head, self.adapter = chosen, head, adapter

    def tile_settings(self, settings: TileSettings, notes: list[str] | None = None) -> tuple[int, int]:
        """Concrete (tile, overlap) for this base; what had to change goes to `notes`.

        The default overlap is the base's (`descriptor.tile_overlap`). A tile too small to share
        that much with its neighbours is raised to the smallest one that can, and a note says so:
        a smaller tile would give results visibly different from the whole image, and a user who
        wants small tiles anyway can pass a smaller --overlap. Fixed-size bases always use their
        patch size.
        """
        desc = self.base.descriptor
        notes = [] if notes is None else notes
        overlap = desc.tile_overlap if settings.overlap is None else settings.overlap
        if desc.fixed_size:
            if not 0 <= overlap < desc.fixed_size:
                raise RestoreError(f"--overlap must be between 0 and {desc.fixed_size - 1} for this base")
            return desc.fixed_size, overlap
        tile = DEFAULT_TILE if settings.tile is None else settings.tile
        if not tile:
            return 0, 0
        usual = self._round_tile(max(tile, desc.min_size))
        if settings.overlap is None:
            # Tiles must be more than twice the overlap so that they advance (the check below).
            tile = self._round_tile(max(usual, 2 * overlap + 2))
            if tile > usual:
                notes.append(
                    f"tile raised from {usual} to {tile} px: {desc.architecture} tiles must overlap by {overlap} px "
                    "to match a whole-image run; pass a smaller --overlap to keep smaller tiles"
                )
        else:
            tile = usual
        if not 0 <= overlap < tile // 2:
            raise RestoreError(f"--overlap must be between 0 and {tile // 2 - 1} for tile {tile}")
        if overlap < desc.tile_overlap:
            notes.append(
                f"--overlap {overlap} is below the {desc.tile_overlap} px {desc.architecture} needs: "
                "tiled results may differ from the whole image and show seams"
            )
        return tile, overlap

    def tile_batch(self, settings: TileSettings) -> int:
        """Tiles per forward: the setting, or this device's default."""
        if settings.batch is None:
            return DEFAULT_BATCH.get(self.device.type, DEFAULT_BATCH["cuda"])
        return max(1, settings.batch)

    def _round_tile(self, tile: int) -> int:
        multiple = self.base.descriptor.size_multiple
        return -(-tile // multiple) * multiple

    @torch.inference_mode()
    def restore(
        self,
        image: torch.Tensor,
        settings: TileSettings | None = None,
        on_tile: TileCallback | None = None,
        sink: RegionSink | None = None,
    ) -> tuple[torch.Tensor | None, RestoreStats]:
        """Restore (1, 3, H, W) in [0, 1]; returns the clamped result on the CPU and what it took.

        With `sink`, each tile's part of the result goes to `sink(top, left, block)` ((1, 3, h, w),
        clamped, on the CPU) as soon as it is done and None is returned: the way to restore
        images whose upscaled float result would not fit in memory.
        """
        if self.task is None:
            raise RestoreError("call use(task) before restore()")
        settings = settings or TileSettings()
        stats = RestoreStats()
        tile, overlap = self.tile_settings(settings, stats.notes)
        batch = self.tile_batch(settings)
        start = time.perf_counter()
        image = image.to(self.device, torch.float32)
        while True:
            try:
                stats.tiles = 0
                output = run_tiled(
                    lambda tiles: self._forward(tiles, stats),
                    image,
                    scale=self.scale,
                    tile=tile,
                    overlap=overlap,
                    batch=batch,
                    multiple=self.base.descriptor.size_multiple,
                    fixed_size=self.base.descriptor.fixed_size,
                    min_size=self.base.descriptor.min_size,
                    on_tile=on_tile,
                    sink=sink and (lambda top, left, block: sink(top, left, block.clamp(0, 1).cpu())),
                )
                break
            except RuntimeError as error:
                if not is_out_of_memory(error):
                    raise
            # Retried here, after the `except` block: inside it the exception's traceback keeps
            # the failed attempt's frames, and so its tensors, allocated.
            tile, batch = self._smaller(tile, overlap, batch, image.shape[-2:])
            stats.oom_retries += 1
            stats.notes.append(f"out of memory: retried with tile {tile or 'whole'} and batch {batch}")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        stats.tile = tile
        stats.seconds = time.perf_counter() - start
        return (None if output is None else output.clamp_(0, 1).cpu()), stats

    def _forward(self, tiles: torch.Tensor, stats: RestoreStats) -> torch.Tensor:
        stats.tiles += tiles.shape[0]
        with autocast(self.device, self.precision):
            out = self.base(tiles, self.head)
        out = out.float()
        finite = torch.isfinite(out).flatten(1).all(dim=1)
        if not bool(finite.all()):
            if self.precision == "fp32":
                raise RestoreError("the model produced non-finite values in fp32; the weights may be broken")
            # Reduced precision overflowed on these tiles only: redo them in fp32.
            bad = ~finite
            out[bad] = self.base(tiles[bad], self.head).float()
            stats.fp32_recomputed += int(bad.sum())
        return out

    def _smaller(self, tile: int, overlap: int, batch: int, size: torch.Size) -> tuple[int, int]:
        """After an out-of-memory error: halve the tile batch first, then the tile."""
        if batch > 1:
            return tile, batch // 2
        desc = self.base.descriptor
        smaller = ((tile or max(size)) // 2) // desc.size_multiple * desc.size_multiple
        if desc.fixed_size or smaller <= max(desc.min_size, 2 * overlap, desc.size_multiple - 1):
            raise RestoreError("out of GPU memory even with the smallest tile; use --device cpu")
        return smaller, batch


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HWC float32 [0, 1] -> (1, 3, H, W), a view: tiles are copied out of it anyway, and a second
    float copy of a 12 MP input would cost 144 MB."""
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def to_numpy(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) -> HWC float32, a view: a 16000 x 12000 output is not copied again."""
    return image[0].permute(1, 2, 0).numpy()
