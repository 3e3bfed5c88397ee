"""CompactIR, the project's own default base: detection, strict round trip, any size, init, adapters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from adaptir_cli.adapters import inject, remove_adapters
from adaptir_cli.bases import WeightsError, detect_architecture, load_base_file
from adaptir_cli.bases.compactir import (
    MLP_PATTERN,
    CompactIRConfig,
    architecture,
    build_compactir,
    describe,
    infer_config,
)
from adaptir_cli.bases.compactir import arch
from adaptir_cli.bases.compactir.arch import MLP, WindowAttention, cut_windows
from adaptir_cli.bases.lmlt.arch import LMLT

TASKS = (("sr4", 4), ("denoise", 1), ("sr2", 2), ("lowlight", 1), ("sr3", 3))
TINY = CompactIRConfig(dim=8, blocks=2, heads=2, window=4, mlp_ratio=2, tasks=TASKS)
# The same with the tails' output-resolution conv.
REFINED = dataclasses.replace(TINY, refine=6)
CONFIGS = pytest.mark.parametrize("config", [TINY, REFINED], ids=["plain", "refined"])


def _randomised(config: CompactIRConfig = TINY) -> torch.nn.Module:
    """A model whose every tensor matters: zero tails and unit norms would hide a bad load."""
    model = build_compactir(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("tails.") or "norm" in name:
                param.uniform_(-0.2, 0.2)
    return model


@CONFIGS
def test_state_dict_round_trips_through_a_saved_file(tmp_path: Path, config: CompactIRConfig) -> None:
    model = _randomised(config)
    path = tmp_path / "compactir.safetensors"
    save_file(model.state_dict(), str(path))

    base = load_base_file(path)
    descriptor = base.descriptor
    assert descriptor.architecture == "compactir"
    assert {name: (h.index, h.scale) for name, h in descriptor.heads.items()} == {
        "denoise": (0, 1), "lowlight": (1, 1), "sr2": (2, 2), "sr3": (3, 3), "sr4": (4, 4),
    }
    assert (descriptor.pixel_range, descriptor.min_size, descriptor.size_multiple) == (1.0, 1, 8)
    assert (descriptor.mlp_layout, descriptor.mlp_dim) == ("nchw", 8)
    assert infer_config(model.state_dict()) == config
    assert descriptor.config["tasks"] == {"denoise": 1, "lowlight": 1, "sr2": 2, "sr3": 3, "sr4": 4}

    x = torch.rand(2, 3, 13, 10)
    with torch.no_grad():
        for name, head in descriptor.heads.items():
            assert torch.equal(base(x, name), model(x, head.index))


def test_detection_is_specific_and_canonicalisation_idempotent() -> None:
    state = _randomised().state_dict()
    assert detect_architecture(state).name == "compactir"
    assert architecture.canonicalize(architecture.canonicalize(state)).keys() == state.keys()
    lmlt = LMLT(scale=2, dim=8, blocks=1, levels=4, ffn_dim=16).state_dict()
    assert not architecture.detect(lmlt)
    assert detect_architecture(lmlt).name == "lmlt"


def test_inconsistent_weights_are_refused_with_the_reason() -> None:
    state = _randomised().state_dict()
    without_tail = {k: v for k, v in state.items() if not k.startswith("tails.sr3.")}
    with pytest.raises(WeightsError, match="one head and one tail per task"):
        infer_config(without_tail)
    bad_table = {**state, "body.0.attn.relative_bias": torch.zeros(2, 50)}
    with pytest.raises(WeightsError, match=r"\(2 \* window - 1\)\^2"):
        infer_config(bad_table)
    with pytest.raises(ValueError, match="'sr2' must have scale 2"):
        CompactIRConfig(tasks=(("sr2", 3),))
    refined = _randomised(REFINED).state_dict()
    one_plain = {k: v for k, v in refined.items() if not k.startswith("tails.sr3.refine.")}
    with pytest.raises(WeightsError, match="same output-resolution conv or none"):
        infer_config(one_plain)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (5, 7), (37, 53), (64, 64)])
@CONFIGS
def test_every_head_gives_the_scaled_size(height: int, width: int, config: CompactIRConfig) -> None:
    model = _randomised(config)
    x = torch.rand(1, 3, height, width)
    with torch.no_grad():
        for index, (_, scale) in enumerate(config.tasks):
            assert model(x, index).shape == (1, 3, scale * height, scale * width)


@CONFIGS
def test_fresh_model_is_the_identity_or_bicubic(config: CompactIRConfig) -> None:
    model = build_compactir(config).eval()
    x = torch.rand(2, 3, 11, 19)
    with torch.no_grad():
        for index, (name, scale) in enumerate(config.tasks):
            bicubic = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
            assert torch.equal(model(x, index), x if scale == 1 else bicubic), name


def test_head_index_out_of_range_names_the_heads() -> None:
    with pytest.raises(ValueError, match="denoise, lowlight, sr2, sr3, sr4"):
        build_compactir(TINY)(torch.rand(1, 3, 8, 8), 5)


def _reference_attention(attn: WindowAttention, x: torch.Tensor, shifted: bool) -> torch.Tensor:
    """Swin's formulation: roll the map (shifted windows), cut windows by reshaping, mask pairs
    from different regions of the rolled map, softmax explicitly, merge and roll back."""
    n, c, h, w = x.shape
    ws, shift, heads = attn.window, attn.window // 2 if shifted else 0, attn.heads
    labels = torch.zeros(h, w)
    region = 0
    for rows in (slice(0, h - ws), slice(h - ws, h - shift), slice(h - shift, h)):
        for cols in (slice(0, w - ws), slice(w - ws, w - shift), slice(w - shift, w)):
            labels[rows, cols] = region
            region += 1

    def windows(t: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N * windows, ws*ws, C)
        t = t.reshape(t.shape[0], t.shape[1], h // ws, ws, w // ws, ws).permute(0, 2, 4, 3, 5, 1)
        return t.reshape(-1, ws * ws, t.shape[-1])

    label_windows = windows(labels[None, None])[..., 0]
    mask = torch.zeros(label_windows.shape[0], ws * ws, ws * ws)
    if shifted:
        mask[label_windows[:, :, None] != label_windows[:, None, :]] = float("-inf")
    tokens = windows(torch.roll(x, (-shift, -shift), (2, 3)))
    q, k, v = attn.qkv(tokens).reshape(tokens.shape[0], ws * ws, 3, heads, -1).permute(2, 0, 3, 1, 4)
    bias = attn.relative_bias[:, attn.bias_index]
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + bias
    scores = scores.reshape(n, -1, heads, ws * ws, ws * ws) + mask[None, :, None]
    out = (scores.softmax(-1).reshape(-1, heads, ws * ws, ws * ws) @ v).transpose(1, 2).reshape(-1, ws * ws, c)
    out = attn.proj(out).reshape(n, h // ws, w // ws, ws, ws, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, h, w)
    return torch.roll(out, (shift, shift), (2, 3))


@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize(("height", "width"), [(4, 4), (8, 12), (16, 8)])
def test_window_attention_matches_swin_roll_and_mask(height: int, width: int, shifted: bool) -> None:
    attn = WindowAttention(dim=8, heads=2, window=4).eval()
    x = torch.randn(2, 8, height, width)
    with torch.no_grad():
        got = attn(x, cut_windows(height, width, 4, shifted=shifted, device=x.device))
        assert torch.allclose(got, _reference_attention(attn, x, shifted), atol=1e-5)


def test_mlp_pattern_targets_every_block_and_adaptir_starts_as_identity() -> None:
    config = CompactIRConfig(dim=16, blocks=3, heads=2, window=4, tasks=TASKS)
    model = _randomised(config)
    descriptor = describe(config)
    assert descriptor.mlp_pattern == MLP_PATTERN
    # x1 heads restore with one body window mirrored around the image; SR heads as the image is.
    assert {name: head.border for name, head in descriptor.heads.items()} == {
        name: config.size_multiple if scale == 1 else 0 for name, scale in TASKS
    }

    # The wrapped module must receive norm2(x), exactly where the paper feeds the adapter.
    seen: dict[str, torch.Tensor] = {}
    block = model.body[1]
    block.norm2.register_forward_hook(lambda _m, _i, out: seen.__setitem__("norm2", out))
    block.mlp.register_forward_hook(lambda _m, inputs, _o: seen.__setitem__("mlp", inputs[0]))
    x = torch.rand(1, 3, 21, 18)
    with torch.no_grad():
        before = [model(x, index) for index in range(len(TASKS))]
    assert isinstance(block.mlp, MLP) and seen["mlp"] is seen["norm2"]

    targets = inject(model, descriptor, "adaptir")
    assert targets == ["body.0.mlp", "body.1.mlp", "body.2.mlp"]
    with torch.no_grad():
        after = [model(x, index) for index in range(len(TASKS))]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    remove_adapters(model)
    assert infer_config(model.state_dict()) == config


def test_every_body_parameter_learns_from_any_head() -> None:
    model = _randomised().train()
    index = TINY.head_names.index("sr3")
    model(torch.rand(2, 3, 9, 10), index).abs().mean().backward()
    for name, param in model.named_parameters():
        used = not name.startswith(("heads.", "tails.")) or name.split(".")[1] == "sr3"
        assert (param.grad is not None and param.grad.abs().sum() > 0) == used, name


def test_window_cuts_are_cached_per_size_shift_and_device(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple] = []
    build = arch._build_cut

    def counting_build(*args):
        built.append(args)
        return build(*args)

    monkeypatch.setattr(arch, "_build_cut", counting_build)
    arch._cached_cut.cache_clear()
    model = _randomised()
    x = torch.rand(1, 3, 24, 20)
    with torch.inference_mode():
        first = model(x, 0)
        second = model(x, 0)
    assert torch.equal(first, second)
    # One plain and one shifted cut of the one body size, built in the first forward only.
    assert len(built) == 2 and {args[3] for args in built} == {False, True}
    cut = cut_windows(*built[0][:4], device="cpu")
    assert cut is cut_windows(*built[0][:4], device=torch.device("cpu"))
    assert cut is not cut_windows(*built[0][:3], not built[0][3], device="cpu")
    fresh = build(*built[0])
    assert torch.equal(cut.order, fresh.order) and torch.equal(cut.inverse, fresh.inverse)


def test_cuts_first_built_under_inference_mode_serve_a_training_step() -> None:
    arch._cached_cut.cache_clear()
    model = _randomised()
    x = torch.rand(2, 3, 16, 16)
    with torch.inference_mode():
        model(x, 1)
    assert not cut_windows(8, 8, TINY.window, True, "cpu").order.is_inference()
    model.train()
    model(x, 1).abs().mean().backward()  # index_select saves the cached indices for backward
    assert model.body[0].attn.qkv.weight.grad is not None


def test_maps_above_the_cache_limit_are_cut_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arch, "CACHED_CUT_PIXELS", 8 * 8)
    small, large = cut_windows(8, 8, 4, True, "cpu"), cut_windows(8, 12, 4, True, "cpu")
    assert small is cut_windows(8, 8, 4, True, "cpu")
    assert large is not cut_windows(8, 12, 4, True, "cpu")
    assert torch.equal(large.order, cut_windows(8, 12, 4, True, "cpu").order)


@pytest.mark.parametrize("mask_windows", [None, 1, 7])  # no mask, one shared by all windows, one per window
def test_window_attention_in_chunks_equals_one_call(monkeypatch: pytest.MonkeyPatch, mask_windows: int | None) -> None:
    from adaptir_cli.bases import attention

    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(7, 2, 16, 4, generator=generator) for _ in range(3))
    mask = None if mask_windows is None else torch.randn(mask_windows, 2, 16, 16, generator=generator)
    whole = attention.window_attention(q, k, v, mask)
    monkeypatch.setattr(attention, "MAX_WINDOWS_PER_CALL", 3)  # CUDA's 65535, scaled down: calls of 3, 3 and 1
    assert torch.allclose(attention.window_attention(q, k, v, mask), whole, atol=1e-6)
