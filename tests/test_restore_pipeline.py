"""The restore pipeline around the device: outputs quantised where they are computed, written on a
writer thread (in order, bounded, errors reported as before), and the tile batch sized from the
free memory on CUDA. The CUDA side itself is checked in tests/test_cuda.py."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from adaptir_cli import restorer as restorer_module
from adaptir_cli.bases import load_base_file
from adaptir_cli.cli.app import app
from adaptir_cli.file_jobs import plan_jobs, run_jobs
from adaptir_cli.host_copies import HostCopies
from adaptir_cli.imaging.device_samples import device_samples
from adaptir_cli.imaging.formats import ImageWriteError
from adaptir_cli.imaging.reading import read_image
from adaptir_cli.imaging.writing import OutputPlan, plan_output, resize_alpha
from adaptir_cli.imaging.tensors import to_numpy, to_tensor
from adaptir_cli.imaging.tiling import Tile
from adaptir_cli.output_writer import InOrder, OutputWriter
from adaptir_cli.restorer import (
    MAX_AUTO_BATCH,
    Restorer,
    RestoreError,
    TileSettings,
    batch_for_memory,
)

runner = CliRunner()
GIB = 1 << 30
# The CUDA run of a test: collected by `pytest -m cuda` (benchmarks/gpu_suite.py), skipped without a GPU.
ON_CUDA = pytest.param("cuda", marks=[
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is false"),
])


@pytest.fixture
def restorer(tiny_emt_file: Path) -> Restorer:
    restorer = Restorer(load_base_file(tiny_emt_file), device="cpu")
    restorer.use("sr2")
    return restorer


def _smooth(height: int, width: int, channels: int, peak: int, seed: int = 0) -> np.ndarray:
    """Smooth content (EMT is chaotic on noise) with every level of the range in use."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, channels, height // 8 + 2, width // 8 + 2), dtype=np.float32))
    fine = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic").clamp(0, 1)
    return np.rint(fine[0].permute(1, 2, 0).numpy() * peak)


# (file name, mode, bit depth): 8-bit RGB, 16-bit RGB, grayscale, RGB with alpha, JPEG.
FORMATS = [("rgb.png", "RGB", 8), ("deep.png", "RGB", 16), ("gray.png", "L", 8), ("alpha.png", "RGBA", 8),
           ("photo.jpg", "RGB", 8)]


def _write_input(path: Path, mode: str, depth: int) -> None:
    height, width = 100, 130
    if depth == 16:
        import cv2  # Pillow cannot write 16-bit RGB

        cv2.imwrite(str(path), _smooth(height, width, 3, 65535).astype(np.uint16))
        return
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    samples = _smooth(height, width, channels, 255).astype(np.uint8)
    Image.fromarray(samples[..., 0] if channels == 1 else samples, mode).save(path)


def _host_pipeline(restorer: Restorer, source: Path, target: Path, settings: TileSettings) -> None:
    """What restore did before the pipeline: the float result quantised on the host, written in line."""
    image = read_image(source)
    alpha = None if image.alpha is None else resize_alpha(image.alpha, restorer.scale)
    plan = plan_output(target, image, has_alpha=alpha is not None)
    output, _ = restorer.restore(to_tensor(image.rgb), settings)
    plan.write(plan.samples(to_numpy(output), alpha))


@pytest.mark.parametrize("device", ["cpu", ON_CUDA])
def test_pipeline_writes_the_same_bytes_as_quantising_and_writing_on_the_host(
    tmp_path: Path, tiny_emt_file: Path, device: str
) -> None:
    """On CUDA this covers the device's luma, rounding and 16-bit samples, and the pinned copies."""
    restorer = Restorer(load_base_file(tiny_emt_file), device=device)
    restorer.use("sr2")
    inputs, out, expected = tmp_path / "in", tmp_path / "out", tmp_path / "expected"
    inputs.mkdir()
    for name, mode, depth in FORMATS:
        _write_input(inputs / name, mode, depth)
    settings = TileSettings(tile=64, overlap=8)  # several tiles, so several blocks per image
    results = list(run_jobs(restorer, plan_jobs([inputs], out, ["sr2"]), settings))
    assert [r.status for r in results] == ["ok"] * len(FORMATS), [r.error for r in results]
    assert all(r.stats.tiles > 1 for r in results), [(r.job.source.name, r.stats.tiles, r.input_size) for r in results]
    for name, _, _ in FORMATS:
        _host_pipeline(restorer, inputs / name, expected / name, settings)
        assert (out / name).read_bytes() == (expected / name).read_bytes(), name


@pytest.mark.parametrize(("grayscale", "depth"), [(False, 8), (True, 8), (False, 16), (True, 16)])
def test_device_samples_equal_the_host_samples(grayscale: bool, depth: int) -> None:
    block = torch.rand(1, 3, 37, 41, generator=torch.Generator().manual_seed(depth)) * 1.2 - 0.1  # some out of range
    plan = OutputPlan(Path("x.png"), None, depth, grayscale, False, None, None, False, 95, [])  # type: ignore[arg-type]
    samples = device_samples(block, plan)
    assert samples.shape == (37, 41, plan.colour_channels) and samples.is_contiguous()
    assert np.array_equal(samples.numpy().astype(plan.dtype), plan.samples(to_numpy(block)))


def test_writes_run_in_order_on_another_thread_and_results_keep_job_order() -> None:
    threads, order = set(), []
    results: InOrder[str] = InOrder()
    with OutputWriter(max_pending=2) as writer:
        for index in range(5):
            if index == 2:
                results.add("ready")
                continue

            def write(index: int = index) -> int:
                threads.add(threading.get_ident())
                order.append(index)
                return index

            results.add_future(writer.submit(write), lambda done: f"written {done.result()}")
        collected = list(results.all())
    assert order == [0, 1, 3, 4] and threads and threading.get_ident() not in threads
    assert collected == ["written 0", "written 1", "ready", "written 3", "written 4"]


def test_the_writer_queue_is_bounded() -> None:
    gate, events = threading.Event(), []

    def slow() -> None:
        gate.wait()
        events.append("first written")

    writer = OutputWriter(max_pending=1)
    try:
        first = writer.submit(slow)

        def submit_second() -> None:
            writer.submit(lambda: None)
            events.append("second queued")

        second = threading.Thread(target=submit_second, daemon=True)
        second.start()
        # A bounded queue holds the second output back while the first is being written; waiting
        # longer only makes the check stricter, never wrong.
        second.join(timeout=0.5)
        assert second.is_alive() and events == []
    finally:
        gate.set()  # a failed check must not leave the writer waiting forever
    second.join()
    first.result()
    writer.close()
    assert events == ["first written", "second queued"]


def test_writer_errors_surface_in_the_job_results_in_order(
    tmp_path: Path, restorer: Restorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        _write_input(inputs / name, "RGB", 8)
    write = OutputPlan.write

    def disk_full_on_b(self: OutputPlan, samples: np.ndarray, *, replace: bool = True) -> None:
        if self.path.name == "b.png":
            raise ImageWriteError(f"cannot write {self.path}: No space left on device")
        write(self, samples, replace=replace)

    monkeypatch.setattr(OutputPlan, "write", disk_full_on_b)
    results = list(run_jobs(restorer, plan_jobs([inputs], tmp_path / "out", ["sr2"]), TileSettings(tile=0)))
    assert [(r.job.source.name, r.status) for r in results] == [("a.png", "ok"), ("b.png", "failed"), ("c.png", "ok")]
    assert results[1].error == f"cannot write {tmp_path / 'out' / 'b.png'}: No space left on device"
    assert results[1].stats.seconds > 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]


def test_a_failed_write_fails_the_command(tmp_path: Path, tiny_emt_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write_input(inputs / "a.png", "RGB", 8)

    def broken(self: OutputPlan, samples: np.ndarray, *, replace: bool = True) -> None:
        raise ImageWriteError(f"cannot write {self.path}: Read-only file system")

    monkeypatch.setattr(OutputPlan, "write", broken)
    result = runner.invoke(app, ["restore", str(inputs), str(tmp_path / "out"), "--task", "sr2", "--base",
                                 str(tiny_emt_file), "-q", "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    failed = [image for image in summary["images"] if image["status"] == "failed"]
    assert len(failed) == 1 and "Read-only file system" in failed[0]["error"]


def test_blocks_on_the_cpu_are_delivered_at_once_in_order() -> None:
    delivered = []
    copies = HostCopies(torch.device("cpu"), lambda top, left, block: delivered.append((top, left, block)))
    blocks = [torch.full((2, 3, 1), value, dtype=torch.uint8) for value in range(3)]
    for index, block in enumerate(blocks):
        copies.put(index, 0, block)
        assert len(delivered) == index + 1
    copies.flush()
    assert [(top, int(block[0, 0, 0])) for top, _, block in delivered] == [(0, 0), (1, 1), (2, 2)]


def _tiles(count: int, side: int = 64) -> list[Tile]:
    return [Tile(0, index * side, side, side) for index in range(count)]


def test_batch_for_memory_fills_half_the_free_memory_within_bounds() -> None:
    assert batch_for_memory(10 * GIB, GIB) == 5
    assert batch_for_memory(GIB, 3 * GIB) == 1
    assert batch_for_memory(1000 * GIB, 1) == MAX_AUTO_BATCH


class _FakeCuda:
    """What the tile batch reads from a CUDA device: 8 GiB free, 1 GiB cached of which 0.5 in use."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, restorer: Restorer, tile_bytes: int) -> None:
        self.probed: list[tuple[int, int]] = []
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * GIB, 80 * GIB))
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: GIB)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: GIB // 2)

        def probe(shape: tuple[int, int]) -> int:
            self.probed.append(shape)
            return tile_bytes

        monkeypatch.setattr(restorer, "_tile_bytes", probe)
        restorer.device = torch.device("cuda")


def test_cuda_tile_batch_comes_from_the_free_memory(restorer: Restorer, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCuda(monkeypatch, restorer, tile_bytes=GIB)
    # Half of 8.5 GiB (free plus cached-but-unused) at 1 GiB a tile.
    assert restorer.tile_batch(TileSettings(), _tiles(9)) == 4
    assert restorer.tile_batch(TileSettings(), _tiles(3)) == 3  # never more than the image has
    shapes = [Tile(0, 0, 64, 64), Tile(0, 64, 64, 80), Tile(64, 0, 96, 64)]
    restorer.tile_batch(TileSettings(), shapes)
    assert fake.probed == [(64, 64), (64, 64), (96, 80)], "the largest tile is measured"


def test_a_user_batch_or_a_single_tile_needs_no_measurement(restorer: Restorer, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCuda(monkeypatch, restorer, tile_bytes=GIB)
    assert restorer.tile_batch(TileSettings(batch=7), _tiles(9)) == 7
    assert restorer.tile_batch(TileSettings(), _tiles(1)) == 1
    assert restorer.tile_batch(TileSettings()) == restorer_module.DEFAULT_BATCH["cuda"]  # image not known yet
    assert fake.probed == []


def test_a_tile_too_large_to_measure_gives_batch_one(restorer: Restorer, monkeypatch: pytest.MonkeyPatch) -> None:
    _FakeCuda(monkeypatch, restorer, tile_bytes=GIB)

    def out_of_memory(shape: tuple[int, int]) -> int:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(restorer, "_tile_bytes", out_of_memory)
    assert restorer.tile_batch(TileSettings(), _tiles(9)) == 1


def test_cpu_keeps_its_default_batch(restorer: Restorer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: pytest.fail("a CPU run reads no GPU memory"))
    assert restorer.tile_batch(TileSettings(), _tiles(9)) == 1
    _, stats = restorer.restore(torch.rand(1, 3, 100, 100), TileSettings(tile=64, overlap=8))
    assert stats.batch == 1 and stats.tiles == 4


def test_non_finite_fp32_output_fails_the_image_once_its_last_tile_is_done(restorer: Restorer) -> None:
    forwards: list[int] = []

    def poison_the_second(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        forwards.append(len(forwards))
        return output * float("nan") if len(forwards) == 2 else output

    hook = restorer.base.module.register_forward_hook(poison_the_second)
    try:
        with pytest.raises(RestoreError, match="non-finite values in fp32"):
            restorer.restore(torch.rand(1, 3, 100, 100), TileSettings(tile=64, overlap=8))
    finally:
        hook.remove()
    # Read once per image, so that the host never waits for a batch to finish.
    assert len(forwards) == 4
