"""IPT base: official checkpoint layout, strict loading, shape inference and the tiny variant's forward."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from adaptir_cli.bases import Head, WeightsError, build_base, load_base_file
from adaptir_cli.bases.ipt import (
    IPT,
    TINY_CONFIG,
    IPTConfig,
    architecture,
    canonicalize,
    detect,
    head_names,
    official_state_dict,
)
from adaptir_cli.bases.ipt.arch import TokenMLP

StateDict = dict[str, torch.Tensor]


def _single_task(state: StateDict, task: int) -> StateDict:
    """The per-task file layout (IPT_sr2.pt, ...): task `task`'s head, tail and query only."""
    single = {}
    for key, value in state.items():
        if match := re.fullmatch(r"(head|tail)\.(\d+)\.(.*)", key):
            if int(match.group(2)) == task:
                single[f"{match.group(1)}.0.{match.group(3)}"] = value
        elif key == "body.query_embed.weight":
            single[key] = value[task : task + 1].clone()
        else:
            single[key] = value
    return single


def _mlp_modules(module: torch.nn.Module, pattern: str) -> list[torch.nn.Module]:
    return [m for name, m in module.named_modules() if re.fullmatch(pattern, name)]


# --- full size: the published checkpoint's layout ------------------------------------------------


@pytest.fixture(scope="module")
def official() -> StateDict:
    """A random IPT_pretrain-shaped state dict under the official key names (built once: ~480 MB)."""
    return official_state_dict(IPT())


@pytest.mark.slow
def test_official_layout_has_the_published_keys_and_parameter_count(official: StateDict) -> None:
    assert len(official) == 381
    assert official["body.query_embed.weight"].shape == (6, 147456)
    assert "body.encoder.layers.11.linear1.weight" in official
    assert "body.decoder.layers.11.norm3.bias" in official
    # The published 118,892,394 counts every tensor but the position_ids buffer (the MeanShift
    # convolutions included); with the buffer there are 256 more.
    counted = sum(v.numel() for k, v in official.items() if not k.endswith("position_ids"))
    assert counted == 118_892_394
    assert sum(v.numel() for v in official.values()) == 118_892_394 + 256


@pytest.mark.slow
def test_official_weights_load_strictly_with_the_pretrain_heads(official: StateDict) -> None:
    base = build_base(official, name="IPT_pretrain", sha256="0" * 64, source="IPT_pretrain.pt")
    d = base.descriptor
    assert d.architecture == "ipt"
    assert d.heads == {
        "sr2": Head(0, 2), "sr3": Head(1, 3), "sr4": Head(2, 4),
        "derain": Head(3, 1), "denoise30": Head(4, 1), "denoise50": Head(5, 1),
    }
    assert (d.pixel_range, d.fixed_size, d.size_multiple, d.min_size) == (255.0, 48, 48, 1)
    assert (d.mlp_layout, d.mlp_dim, d.supports_bf16) == ("seq_first", 576, True)
    assert d.config["num_heads"] == 12 and d.config["tokens"] == 256 and d.config["hidden_dim"] == 2304
    mlps = _mlp_modules(base.module, d.mlp_pattern)
    assert len(mlps) == 24 and all(isinstance(m, TokenMLP) for m in mlps)
    assert sum(p.numel() for p in base.module.parameters()) == 118_892_394
    # The official feed-forward tensors landed in our `mlp` submodules.
    loaded = base.module.state_dict()
    assert torch.equal(loaded["body.decoder.layers.7.mlp.linear2.weight"], official["body.decoder.layers.7.linear2.weight"])


@pytest.mark.slow
def test_prefixed_per_task_file_loads_with_its_single_head(official: StateDict, tmp_path: Path) -> None:
    # What DataParallel saves for IPT_sr4.pt; the official strict=False loader loaded nothing from it.
    single = _single_task(official, task=2)
    path = tmp_path / "IPT_sr4.pt"
    torch.save({f"module.{key}": value for key, value in single.items()}, path)
    del single
    base = load_base_file(path)
    assert base.name == "IPT_sr4"
    assert base.descriptor.heads == {"sr4": Head(0, 4)}
    assert len(base.module.head) == len(base.module.tail) == 1
    query = base.module.state_dict()["body.query_embed.weight"]
    assert torch.equal(query, official["body.query_embed.weight"][2:3])


# --- tiny variant: forward and loading behaviour, fast -------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> IPT:
    # Frozen like a loaded base: PyTorch takes another (equally exact) kernel path when no
    # parameter needs gradients, and the comparisons below are bitwise.
    return IPT(TINY_CONFIG).eval().requires_grad_(False)


def test_tiny_forward_gives_each_heads_scale(tiny: IPT) -> None:
    x = torch.rand(2, 3, 12, 12) * 255
    with torch.no_grad():
        for head, scale in enumerate(TINY_CONFIG.scales):
            assert tiny(x, head).shape == (2, 3, 12 * scale, 12 * scale)


@pytest.mark.parametrize("shape", [(1, 3, 13, 13), (1, 3, 24, 24), (1, 3, 12, 24), (1, 1, 12, 12), (3, 12, 12)])
def test_body_refuses_any_size_but_its_patch(tiny: IPT, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"only accepts \(N, 3, 12, 12\)"):
        tiny(torch.zeros(shape), 0)


def test_unknown_head_index_is_refused(tiny: IPT) -> None:
    with pytest.raises(ValueError, match="out of range"):
        tiny(torch.zeros(1, 3, 12, 12), 6)


def test_rebuilt_from_official_keys_computes_the_same_function(tiny: IPT) -> None:
    base = build_base(official_state_dict(tiny), name="tiny", sha256="0" * 64, source="tiny.pt")
    assert base.module.config == TINY_CONFIG
    assert len(_mlp_modules(base.module, base.descriptor.mlp_pattern)) == 4
    x = torch.rand(1, 3, 12, 12) * 255
    with torch.no_grad():
        for head in range(len(TINY_CONFIG.scales)):
            assert torch.equal(base.module(x, head), tiny(x, head))


@pytest.mark.parametrize("task", range(6))
def test_per_task_file_reproduces_its_task_of_the_multi_task_model(tiny: IPT, task: int) -> None:
    single = _single_task(official_state_dict(tiny), task)
    base = build_base(single, name="single", sha256="0" * 64, source="single.pt")
    scale = TINY_CONFIG.scales[task]
    assert base.descriptor.heads == {("x1" if scale == 1 else f"sr{scale}"): Head(0, scale)}
    x = torch.rand(1, 3, 12, 12) * 255
    with torch.no_grad():
        assert torch.equal(base.module(x, 0), tiny(x, task))


def test_canonicalize_moves_feed_forward_into_mlp_and_is_idempotent(tiny: IPT) -> None:
    official = official_state_dict(tiny)
    canonical = canonicalize(official)
    assert canonical.keys() == tiny.state_dict().keys()
    assert canonicalize(canonical) == canonical
    assert "body.encoder.layers.1.linear1.bias" in official
    assert "body.encoder.layers.1.mlp.linear1.bias" in canonical
    # The body's own MLP head keeps its name.
    assert "body.mlp_head.3.weight" in canonical


def test_detect_accepts_both_layouts_and_nothing_else(tiny: IPT) -> None:
    assert detect(official_state_dict(tiny))
    assert detect(tiny.state_dict())
    assert not detect({"conv_first.weight": torch.zeros(1), "body.0.weight": torch.zeros(1)})
    assert architecture.name == "ipt"


@pytest.mark.parametrize("key", ["body.decoder.layers.1.norm3.bias", "head.0.0.weight"])
def test_missing_key_is_refused_and_named(tiny: IPT, key: str) -> None:
    state = official_state_dict(tiny)
    del state[key]
    with pytest.raises(WeightsError, match=re.escape(key)):
        build_base(state, name="broken", sha256="0" * 64, source="broken.pt")


def test_extra_key_is_refused_and_named(tiny: IPT) -> None:
    state = {**official_state_dict(tiny), "body.stray.weight": torch.zeros(3)}
    with pytest.raises(WeightsError, match=r"unexpected \(1\): body\.stray\.weight"):
        build_base(state, name="broken", sha256="0" * 64, source="broken.pt")


def test_mismatched_query_count_is_refused(tiny: IPT) -> None:
    state = official_state_dict(tiny)
    state["body.query_embed.weight"] = state["body.query_embed.weight"][:2]
    with pytest.raises(WeightsError, match="6 task heads but 2 task queries"):
        build_base(state, name="broken", sha256="0" * 64, source="broken.pt")


def test_head_names() -> None:
    assert head_names((2, 3, 4, 1, 1, 1)) == ["sr2", "sr3", "sr4", "derain", "denoise30", "denoise50"]
    assert head_names((3,)) == ["sr3"]
    assert head_names((1,)) == ["x1"]
    # Any other layout is named by scale, with the task index where names would collide.
    assert head_names((2, 1, 1)) == ["sr2", "x1-1", "x1-2"]


def test_heads_count_defaults_to_a_divisor_of_the_width() -> None:
    small = IPTConfig(n_feats=5, patch_dim=2, patch_size=8, encoder_layers=1, decoder_layers=1, hidden_dim=40, num_heads=10, scales=(1,))
    base = build_base(official_state_dict(IPT(small)), name="small", sha256="0" * 64, source="small.pt")
    # Width 20: 12 does not divide it, 10 is the largest divisor that is at most 12.
    assert base.descriptor.config["num_heads"] == 10


def test_bf16_output_leaves_autocast_in_fp32_within_8_bit_quantisation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Precision `auto` runs IPT in bf16 on CUDA: the tail and mean shift, which write the output,
    must not round it to bf16's 8 significant bits (CPU autocast behaves the same way). The body's
    own contribution is switched off so that only the output path's precision is measured."""
    torch.manual_seed(0)
    model = IPT(TINY_CONFIG).eval()
    monkeypatch.setattr(model.body, "forward", lambda x, task: torch.zeros_like(x))
    x = torch.rand(4, 3, TINY_CONFIG.patch_size, TINY_CONFIG.patch_size) * 255
    with torch.no_grad():
        reference = model(x, 0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reduced = model(x, 0)
    assert reduced.dtype == torch.float32
    assert (reduced - reference).abs().max() < 0.5, "more than half an 8-bit step (0..255 scale) off"
