"""The torch batch forms of the training degradations agree with the numpy reference ops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptir_cli.data.batched import BATCHED, batched, bicubic_down
from adaptir_cli.data.degradations import DEGRADATIONS, blind_denoise
from adaptir_cli.training.sampling import grey_pixels

# Reference draws replayed exactly: the same numbers up to float rounding of the arithmetic.
EXACT = {"denoise", "denoise15", "denoise25", "denoise30", "denoise50", "lowlight", "derain", "derain-varied", "derain-heavy"}


def _crops(count: int, side: int, seed: int = 0) -> np.ndarray:
    """Textured 8-bit crops as float32 HWC, the way the sampler hands them over."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.05, 0.95, side)[None, :, None] * np.ones((side, 1, 3))
    pixels = np.clip(ramp + rng.normal(0, 0.15, (count, side, side, 3)), 0, 1)
    return (np.round(pixels * 255) / 255).astype(np.float32)


def _reference(name: str):
    return blind_denoise() if name == "denoise" else DEGRADATIONS[name]


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("name", sorted(BATCHED))
def test_batch_form_matches_the_reference_sample_by_sample(name: str) -> None:
    reference = _reference(name)
    side = 16 * reference.scale
    images = _crops(4, side)
    expected = np.stack([reference(image, np.random.default_rng([7, i])) for i, image in enumerate(images)])
    rngs = [np.random.default_rng([7, i]) for i in range(4)]
    got = BATCHED[name](_nchw(images), rngs, [False] * 4).permute(0, 2, 3, 1).numpy()
    assert got.dtype == np.float32 and got.shape == expected.shape
    difference = np.abs(got.astype(np.float64) - expected)
    if name in EXACT:
        assert difference.max() < 1e-5, "the same draws must give the same pixels"
    else:
        # Bicubic: the matrix products sum in another order, so rare exact .5 ties round the other way.
        assert difference.max() <= 1.0 / 255 + 1e-6
        assert np.mean(difference > 1e-6) < 0.002


def test_every_training_degradation_has_a_batch_form() -> None:
    assert set(DEGRADATIONS) | {"denoise"} == set(BATCHED)


def test_bicubic_refuses_crops_that_are_not_multiples_of_the_scale() -> None:
    with pytest.raises(ValueError, match="multiples of the scale 4"):
        bicubic_down(torch.zeros(1, 3, 18, 16), 4)


def test_a_sample_depends_on_its_own_stream_only() -> None:
    """Splitting a batch (as torchrun ranks do) gives each sample the pixels it gets in the whole batch."""
    images = _nchw(_crops(4, 32))
    for name in ("sr4", "derain", "lowlight", "lr4-noise30"):
        whole = BATCHED[name](images, [np.random.default_rng([3, i]) for i in range(4)], [False] * 4)
        halves = [
            BATCHED[name](images[part], [np.random.default_rng([3, i]) for i in range(*bounds)], [False] * 2)
            for part, bounds in ((slice(0, 2), (0, 2)), (slice(2, 4), (2, 4)))
        ]
        assert torch.equal(torch.cat(halves), whole), name


@pytest.mark.parametrize("name", ["denoise30", "denoise", "lowlight"])
def test_grey_samples_get_grey_noise(name: str) -> None:
    grey = np.repeat(_crops(2, 24)[..., :1], 3, axis=3)
    degraded = BATCHED[name](_nchw(grey), [np.random.default_rng(i) for i in range(2)], [True, False])
    assert torch.equal(degraded[0, 0], degraded[0, 1]) and torch.equal(degraded[0, 1], degraded[0, 2])
    assert not torch.equal(degraded[1, 0], degraded[1, 1]), "a colour sample keeps independent channels"


def test_grey_pixels_are_the_bt601_luma_in_every_channel() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    grey = grey_pixels(rgb)
    assert grey.dtype == np.uint8 and grey.shape == rgb.shape
    assert grey[0, :, 0].tolist() == [76, 150, 29, 18]
    assert np.array_equal(grey[..., 0], grey[..., 2])


def test_a_degradation_without_a_batch_form_runs_sample_by_sample() -> None:
    from adaptir_cli.data.degradations import Degradation

    flip = Degradation("flip", 1, "mirror", lambda img, rng: np.ascontiguousarray(img[:, ::-1]))
    images = _crops(2, 8)
    out = batched(flip)(_nchw(images), [np.random.default_rng(0)] * 2, [False] * 2)
    assert torch.equal(out, _nchw(np.ascontiguousarray(images[:, :, ::-1])))
