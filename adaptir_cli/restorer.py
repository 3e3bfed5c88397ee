"""Restoring images with one loaded base and swappable adapters: the library behind `adaptir restore`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from adaptir_cli.adapters import AdapterFile, apply_adapter, check_task, read_adapter
from adaptir_cli.bases import LoadedBase
from adaptir_cli.host_copies import HostCopies
from adaptir_cli.imaging.tiling import RegionSink, Tile, run_tiled, tile_boxes
from adaptir_cli.runtime import apply_tf32_policy, autocast, is_out_of_memory, resolve_device, resolve_precision
from adaptir_cli.tasks import Task, get_task, head_for

TileCallback = Callable[[int, int], None]

# 512 px tiles keep the activations of a tile within a few hundred MB (docs/performance.md) while
# recomputing little: with the bases' overlaps, 14 % (EMT, CompactIR) to 31 % (LMLT) of a large image.
DEFAULT_TILE = 512
# Tiles run together by default. A CPU is kept busy by one 512 px tile, and four of them hold
# four times the activations (CompactIR x2: 2.4 GB against 0.8 GB), so a CPU runs one at a time.
# On CUDA the batch is sized from the free memory (`Restorer.tile_batch`); 4 is what is reported
# before an image says how large its tiles are.
DEFAULT_BATCH = {"cpu": 1, "cuda": 4}
# On CUDA the tile batch fills this share of the memory left free (free on the device plus what
# PyTorch keeps cached but unused): the rest is headroom for fragmentation, the output blocks and
# other processes. An out-of-memory error still halves the batch and retries.
MEMORY_SHARE = 0.5
# More tiles than this per forward are no faster per tile (the official tiler batches 64 patches)
# and only delay the first output.
MAX_AUTO_BATCH = 64


class RestoreError(RuntimeError):
    """An image could not be restored; the message says why."""


class TileSettingsError(RestoreError, ValueError):
    """A tile size or overlap the base cannot take (a usage error: no image can run with it)."""


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
    batch: int = 0
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
        # Peak device bytes of one tile's forward, per (tile shape, head, precision): measured once.
        self._tile_memory: dict[tuple[tuple[int, int], str, str], int] = {}
        # fp32 finiteness flags of the image being restored, still on the device (see _forward).
        self._unchecked: list[torch.Tensor] = []

    @property
    def scale(self) -> int:
        return self.base.descriptor.head(self.head).scale

    def use(
        self, task: str, adapter: Path | AdapterFile | None = None, *, force: bool = False, bare: bool = False
    ) -> None:
        """Select the task (and so the base head) and the adapter; None runs the bare head.

        `force` runs an adapter trained on other base weights, or for another task. `bare` lets
        the head alone run a task that needs an adapter (lr4-noise30 on the sr4 head): a
        measurement of the frozen base (bench, experiments), not a restoration to give users.
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
        if adapter is None and chosen.adapter_required and not bare:
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
        if (settings.tile or 0) < 0 or (settings.overlap or 0) < 0:
            raise TileSettingsError(f"tile and overlap must be 0 or more pixels, not {settings.tile} and {settings.overlap}")
        overlap = desc.tile_overlap if settings.overlap is None else settings.overlap
        if desc.fixed_size:
            if not 0 <= overlap < desc.fixed_size:
                raise TileSettingsError(f"--overlap must be between 0 and {desc.fixed_size - 1} for this base")
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
            raise TileSettingsError(f"--overlap must be between 0 and {tile // 2 - 1} for tile {tile}")
        if overlap < desc.tile_overlap:
            notes.append(
                f"--overlap {overlap} is below the {desc.tile_overlap} px {desc.architecture} needs: "
                "tiled results may differ from the whole image and show seams"
            )
        return tile, overlap

    def tile_batch(self, settings: TileSettings, tiles: list[Tile] | None = None) -> int:
        """Tiles per forward: the setting; on CUDA, given an image's `tiles`, as many of them as
        fit in MEMORY_SHARE of the free device memory; otherwise this device's default."""
        if settings.batch is not None:
            return max(1, settings.batch)
        if self.device.type != "cuda" or tiles is None:
            return DEFAULT_BATCH.get(self.device.type, DEFAULT_BATCH["cuda"])
        if len(tiles) == 1:
            return 1
        shape = (max(box.height for box in tiles), max(box.width for box in tiles))
        try:
            per_tile = self._tile_bytes(shape)
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            return 1  # not even one tile fits: restore's out-of-memory retry makes the tiles smaller
        return min(len(tiles), batch_for_memory(free_device_memory(self.device), per_tile))

    def _tile_bytes(self, shape: tuple[int, int]) -> int:
        """Peak device memory of one forward on a tile of `shape`, measured on a blank tile once
        per shape, head and precision: activations differ too much between bases, scales and
        attention kernels to be predicted."""
        key = (shape, self.head, self.precision)
        if key not in self._tile_memory:
            torch.cuda.synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            # The device's peak statistic is reset: whoever reads it next sees this restore's peak.
            torch.cuda.reset_peak_memory_stats(self.device)
            with torch.inference_mode(), autocast(self.device, self.precision):
                self.base(torch.zeros(1, 3, *shape, device=self.device), self.head)
            self._tile_memory[key] = max(1, torch.cuda.max_memory_allocated(self.device) - before)
        return self._tile_memory[key]

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
        quantize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor | None, RestoreStats]:
        """Restore (1, 3, H, W) in [0, 1]; returns the clamped result on the CPU and what it took.

        With `sink`, each tile's part of the result goes to `sink(top, left, block)` ((1, 3, h, w),
        clamped, on the CPU) as soon as it is done and None is returned: the way to restore
        images whose upscaled float result would not fit in memory. With `quantize` as well, each
        part is first mapped by `quantize` on the device (unclamped, to the output's integer
        samples: a quarter of the bytes to move) and `sink` gets that result in host memory,
        copied without making the device wait (HostCopies).
        """
        if self.task is None:
            raise RestoreError("call use(task) before restore()")
        settings = settings or TileSettings()
        stats = RestoreStats()
        tile, overlap = self.tile_settings(settings, stats.notes)
        grid = {
            "multiple": self.base.descriptor.size_multiple,
            "fixed_size": self.base.descriptor.fixed_size,
            "min_size": self.base.descriptor.min_size,
            "border": self.base.descriptor.head(self.head).border,
        }
        batch = self.tile_batch(settings, tile_boxes(*image.shape[-2:], tile=tile, overlap=overlap, **grid))
        start = time.perf_counter()
        image = image.to(self.device, torch.float32)
        while True:
            copies = None if sink is None else HostCopies(self.device, sink, in_flight=2 * batch)
            try:
                stats.tiles = 0
                self._unchecked = []
                output = run_tiled(
                    lambda tiles: self._forward(tiles, stats),
                    image,
                    scale=self.scale,
                    tile=tile,
                    overlap=overlap,
                    batch=batch,
                    on_tile=on_tile,
                    sink=None if copies is None else _device_sink(copies, quantize),
                    **grid,
                )
                if copies is not None:
                    copies.flush()
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
        if self._unchecked and not bool(torch.stack(self._unchecked).all()):
            raise RestoreError("the model produced non-finite values in fp32; the weights may be broken")
        stats.tile, stats.batch = tile, batch
        stats.seconds = time.perf_counter() - start
        return (None if output is None else output.clamp_(0, 1).cpu()), stats

    def _forward(self, tiles: torch.Tensor, stats: RestoreStats) -> torch.Tensor:
        stats.tiles += tiles.shape[0]
        with autocast(self.device, self.precision):
            out = self.base(tiles, self.head)
        out = out.float()
        finite = torch.isfinite(out).flatten(1).all(dim=1)
        if self.precision == "fp32":
            # Read once the whole image is done (restore): reading it here would make the host
            # wait for every batch, and the device for the host to queue the next one.
            self._unchecked.append(finite.all())
            return out
        if not bool(finite.all()):
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


def free_device_memory(device: torch.device) -> int:
    """Bytes a CUDA device can still give this process: free on the device (torch.cuda.mem_get_info)
    plus what PyTorch's allocator holds cached but unused, which mem_get_info counts as taken."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def batch_for_memory(free_bytes: int, tile_bytes: int) -> int:
    """Tiles per forward that fit in MEMORY_SHARE of `free_bytes`, from 1 to MAX_AUTO_BATCH."""
    return max(1, min(MAX_AUTO_BATCH, int(MEMORY_SHARE * free_bytes) // max(1, tile_bytes)))


def _device_sink(copies: HostCopies, quantize: Callable[[torch.Tensor], torch.Tensor] | None) -> RegionSink:
    """The sink run_tiled feeds: each block clamped (or quantised) on the device, then sent to the host."""
    if quantize is None:
        return lambda top, left, block: copies.put(top, left, block.clamp(0, 1))
    return lambda top, left, block: copies.put(top, left, quantize(block))

