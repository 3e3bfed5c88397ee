"""Running out of device memory: detected on every torch the package allows, retried with a
smaller tile batch once the failed attempt's tensors are gone."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
import torch

from adaptir_cli.bases import load_base_file
from adaptir_cli.restorer import Restorer, TileSettings
from adaptir_cli.runtime import is_out_of_memory


def _errors() -> list[BaseException]:
    found = [RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")]
    for owner in (torch, torch.cuda):
        if getattr(owner, "OutOfMemoryError", None) is not None:
            found.append(owner.OutOfMemoryError("out of memory"))
    return found


@pytest.mark.parametrize("error", _errors(), ids=lambda e: type(e).__module__ + "." + type(e).__name__)
@pytest.mark.parametrize("old_torch", [False, True], ids=["torch", "torch-without-OutOfMemoryError"])
def test_an_injected_out_of_memory_error_is_retried_after_the_attempt_is_freed(
    tiny_emt_file: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, old_torch: bool
) -> None:
    if old_torch:  # torch < 2.5 has no torch.OutOfMemoryError at all
        monkeypatch.delattr(torch, "OutOfMemoryError", raising=False)
    restorer = Restorer(load_base_file(tiny_emt_file), device="cpu")
    restorer.use("sr2")
    image = torch.rand(1, 3, 40, 40)
    expected, _ = restorer.restore(image, TileSettings(tile=32, overlap=4, batch=4))
    forward = restorer._forward
    held: list[weakref.ref] = []

    def failing_once(tiles: torch.Tensor, stats) -> torch.Tensor:
        if not held:
            activations = torch.empty(tiles.shape[0], 64, 64, 64)  # what the failed attempt had allocated
            held.append(weakref.ref(activations))
            raise type(error)(*error.args)  # a fresh one, as a real failure raises
        assert held[0]() is None, "the failed attempt's tensors are still alive at the retry"
        return forward(tiles, stats)

    monkeypatch.setattr(restorer, "_forward", failing_once)
    gc.disable()  # only reference counting may free them, as on a GPU where the next attempt needs the memory
    try:
        output, stats = restorer.restore(image, TileSettings(tile=32, overlap=4, batch=4))
    finally:
        gc.enable()
    assert stats.oom_retries == 1 and any("out of memory" in note for note in stats.notes)
    assert torch.equal(output, expected)


def test_other_runtime_errors_are_not_mistaken_for_out_of_memory() -> None:
    assert not is_out_of_memory(RuntimeError("shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))
