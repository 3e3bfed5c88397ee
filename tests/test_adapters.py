"""Adapters: generic invariants crossed with a table of (base, method, config) rows, then specifics.

A new method or config only adds rows to ROWS; every invariant then runs for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from adaptir_cli.adapters import (
    METHODS,
    AdaptedMLP,
    AdapterFileError,
    AdapterMismatchError,
    AdaptIR,
    AdaptIRConfig,
    AdaptedLayer,
    adapted_layers,
    adapter_state_dict,
    apply_adapter,
    check_compatible,
    inject,
    load_adapter_state_dict,
    mark_only_adapters_trainable,
    read_adapter,
    remove_adapters,
    save_adapter,
    set_adapters_enabled,
    train_adapters,
)
from adaptir_cli.adapters import file_format
from adaptir_cli.adapters.adaptformer import AdaptFormerConfig
from adaptir_cli.adapters.adaptir import FrequencyBranch
from adaptir_cli.adapters.bottleneck import BottleneckConfig
from adaptir_cli.adapters.lora import LoRA, LoRAConfig
from adaptir_cli.adapters.ssf import SSFConfig
from adaptir_cli.bases.compactir import CompactIRConfig, build_compactir
from adaptir_cli.bases.compactir import describe as describe_compactir
from adaptir_cli.bases.descriptor import BaseDescriptor, Head
from adaptir_cli.bases.emt import EMT, EMTConfig
from adaptir_cli.bases.emt import describe as describe_emt
from adaptir_cli.bases.emt.arch import shift_pixels
from adaptir_cli.bases.ipt import IPT, TINY_CONFIG
from adaptir_cli.bases.ipt import describe as describe_ipt
from adaptir_cli.bases.model import LoadedBase
from adaptir_cli.tasks import UnknownTaskError, get_task, head_for

TOY_DIM = 8


pytestmark = pytest.mark.usefixtures("one_thread")


class ConvBlock(nn.Module):
    """An nchw MLP behind a real BatchNorm, like EMT: training adapters must not touch its statistics."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, 2 * dim, 1), nn.GELU(), nn.Conv2d(2 * dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class TokenBlock(nn.Module):
    """A sequence-first token MLP behind a LayerNorm, like IPT."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.mlp(self.norm(tokens))


class ToyNet(nn.Module):
    def __init__(self, tokens: bool, dim: int = TOY_DIM, depth: int = 2) -> None:
        super().__init__()
        self.tokens = tokens
        self.head = nn.Conv2d(3, dim, 3, padding=1)
        self.blocks = nn.ModuleList((TokenBlock if tokens else ConvBlock)(dim) for _ in range(depth))
        self.tail = nn.Conv2d(dim, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, head: int = 0) -> torch.Tensor:
        features = self.head(x)
        if self.tokens:
            n, d, h, w = features.shape
            tokens = features.flatten(2).permute(2, 0, 1)  # (L, N, d), row-major grid
            for block in self.blocks:
                tokens = block(tokens)
            features = tokens.permute(1, 2, 0).reshape(n, d, h, w)
        else:
            for block in self.blocks:
                features = block(features)
        return x + self.tail(features)


def _loaded(name: str, module: nn.Module, descriptor: BaseDescriptor) -> LoadedBase:
    sha = hashlib.sha256(name.encode()).hexdigest()
    return LoadedBase(name=name, module=module, descriptor=descriptor, sha256=sha, source="test").freeze()


def toy_conv_base() -> LoadedBase:
    torch.manual_seed(1)
    module = ToyNet(tokens=False)
    with torch.no_grad():  # non-trivial running statistics, so a change would show
        for block in module.blocks:
            block.norm.running_mean.normal_()
            block.norm.running_var.uniform_(0.5, 1.5)
    descriptor = BaseDescriptor(
        architecture="toy-conv", heads={"denoise": Head(0, 1)}, mlp_pattern=r"blocks\.\d+\.mlp",
        mlp_layout="nchw", mlp_dim=TOY_DIM,
    )
    return _loaded("toy-conv", module, descriptor)


def toy_token_base() -> LoadedBase:
    torch.manual_seed(2)
    descriptor = BaseDescriptor(
        architecture="toy-tokens", heads={"denoise": Head(0, 1)}, fixed_size=8, mlp_pattern=r"blocks\.\d+\.mlp",
        mlp_layout="seq_first", mlp_dim=TOY_DIM,
    )
    return _loaded("toy-tokens", ToyNet(tokens=True), descriptor)


TINY_EMT = EMTConfig(scale=2, dim=12, groups=1, layers=2, attention_layers=1)


def tiny_emt_base() -> LoadedBase:
    torch.manual_seed(3)
    return _loaded("emt-tiny", EMT(TINY_EMT), describe_emt(TINY_EMT))


def tiny_ipt_base() -> LoadedBase:
    torch.manual_seed(4)
    return _loaded("ipt-tiny", IPT(TINY_CONFIG), describe_ipt(TINY_CONFIG))


TINY_COMPACTIR = CompactIRConfig(dim=8, blocks=2, heads=2, window=4, mlp_ratio=2, tasks=(("denoise", 1),))


def tiny_compactir_base() -> LoadedBase:
    torch.manual_seed(6)
    module = build_compactir(TINY_COMPACTIR)
    with torch.no_grad():  # its tails start at zero, which would hide every adapter
        for name, param in module.named_parameters():
            if name.startswith("tails."):
                param.uniform_(-0.2, 0.2)
    return _loaded("compactir-tiny", module, describe_compactir(TINY_COMPACTIR))


@dataclass(frozen=True)
class Row:
    id: str
    base: Callable[[], LoadedBase]
    method: str
    config: Any
    # A second config of the same method with other shapes: swapping to it re-injects.
    other_config: Any
    task: str
    size: int
    # A tensor that must change in the first training step (the zero-initialised one, where there is one).
    first_to_move: str = "up.weight"

    def input(self) -> torch.Tensor:
        return torch.rand(2, 3, self.size, self.size, generator=torch.Generator().manual_seed(5))

    def run(self, base: LoadedBase) -> torch.Tensor:
        with torch.no_grad():
            return base(self.input(), self.head(base))

    def head(self, base: LoadedBase) -> str:
        return head_for(get_task(self.task), base.descriptor.heads)


ABLATIONS = {
    "no-lim": AdaptIRConfig(local=False), "no-fam": AdaptIRConfig(frequency=False),
    "no-cgm": AdaptIRConfig(channel=False), "sum": AdaptIRConfig(ensemble=False),
}
ROWS = [
    Row("toy-conv-adaptir", toy_conv_base, "adaptir", AdaptIRConfig(), AdaptIRConfig(hidden=12, rank=3), "denoise", 8),
    Row("toy-tokens-adaptir", toy_token_base, "adaptir", AdaptIRConfig(), AdaptIRConfig(hidden=16), "denoise", 8),
    Row("emt-tiny-adaptir", tiny_emt_base, "adaptir", AdaptIRConfig(), AdaptIRConfig(hidden=10), "sr2", 20),
    Row("ipt-tiny-adaptir", tiny_ipt_base, "adaptir", AdaptIRConfig(), AdaptIRConfig(hidden=9, rank=2), "denoise30",
        12),
    *(
        Row(f"toy-conv-adaptir-{name}", toy_conv_base, "adaptir", config, dataclasses.replace(config, hidden=12),
            "denoise", 8)
        for name, config in ABLATIONS.items()
    ),
    *(
        row
        for base_id, base, task, size in (
            ("toy-conv", toy_conv_base, "denoise", 8), ("toy-tokens", toy_token_base, "denoise", 8),
            ("emt-tiny", tiny_emt_base, "sr2", 20), ("compactir-tiny", tiny_compactir_base, "denoise", 8),
        )
        for row in (
            Row(f"{base_id}-lora", base, "lora", LoRAConfig(rank=2), LoRAConfig(rank=3, alpha=6), task, size, "up"),
            Row(f"{base_id}-adapter", base, "adapter", BottleneckConfig(), BottleneckConfig(hidden=5), task, size),
            Row(f"{base_id}-adaptformer", base, "adaptformer", AdaptFormerConfig(), AdaptFormerConfig(hidden=6),
                task, size),
            # SSF has no size knob: its "other" config is the same, so that swap copies tensors.
            Row(f"{base_id}-ssf", base, "ssf", SSFConfig(), SSFConfig(), task, size, "scale"),
        )
    ),
    Row("ipt-tiny-lora", tiny_ipt_base, "lora", LoRAConfig(), LoRAConfig(rank=2), "denoise30", 12, "up"),
]
table = pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])


def randomize_adapters(module: nn.Module, seed: int) -> None:
    """Move every adapter tensor off its initial value (a zero up-projection hides everything else)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in adapter_state_dict(module).items():
            if not tensor.is_floating_point():
                continue
            noise = torch.rand(tensor.shape, generator=generator)
            if key.endswith("running_var"):
                tensor.copy_(0.5 + noise)
            else:
                tensor.add_(0.2 * noise - 0.1)


def adapted(row: Row, seed: int, config: Any = None) -> LoadedBase:
    base = row.base()
    inject(base.module, base.descriptor, row.method, row.config if config is None else config)
    randomize_adapters(base.module, seed)
    return base


def save(row: Row, base: LoadedBase, path: Path, config: Any = None) -> Path:
    config = row.config if config is None else config
    return save_adapter(path, base.module, method=row.method, config=config, base=base, task=row.task)


@table
def test_identity_at_initialisation(row: Row) -> None:
    base = row.base()
    expected = row.run(base)
    names = inject(base.module, base.descriptor, row.method, row.config)
    assert names and set(names) == set(adapted_layers(base.module))
    assert torch.equal(row.run(base), expected)


@table
def test_disabled_equals_base(row: Row) -> None:
    expected = row.run(row.base())
    base = adapted(row, seed=1)
    with_adapters = row.run(base)
    assert not torch.allclose(with_adapters, expected)
    set_adapters_enabled(base.module, False)
    assert torch.equal(row.run(base), expected)
    set_adapters_enabled(base.module, True)
    assert torch.equal(row.run(base), with_adapters)


@table
def test_save_read_apply_on_fresh_base_reproduces_output(row: Row, tmp_path: Path) -> None:
    base = adapted(row, seed=1)
    expected = row.run(base)
    path = save_adapter(
        tmp_path / "a.safetensors", base.module, method=row.method, config=row.config, base=base, task=row.task,
        training={"steps": 3, "loss": 0.5},
    )
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]  # no temporary file left behind

    adapter = read_adapter(path)
    assert (adapter.method, adapter.config, adapter.task) == (row.method, row.config, row.task)
    assert (adapter.base_name, adapter.base_sha256) == (base.name, base.sha256)
    assert adapter.training == {"steps": 3, "loss": 0.5}
    assert adapter.state.keys() == adapter_state_dict(base.module).keys()
    if row.method == "adaptir":
        assert any("running_mean" in key for key in adapter.state)  # buffers travel with the adapter

    fresh = row.base()
    apply_adapter(fresh, adapter)
    assert torch.equal(row.run(fresh), expected)


@table
def test_one_training_step_changes_only_adapter_tensors(row: Row) -> None:
    base = row.base()
    original = {key: value.clone() for key, value in base.module.state_dict().items()}
    inject(base.module, base.descriptor, row.method, row.config)
    trainable = mark_only_adapters_trainable(base.module)
    layers = adapted_layers(base.module)
    assert trainable == sum(p.numel() for layer in layers.values() for p in layer.adapter.parameters())
    train_adapters(base.module)
    for name, child in base.module.named_modules():
        in_adapter = any(name.startswith(f"{target}.adapter") for target in layers)
        assert child.training == in_adapter, name

    before = {key: value.clone() for key, value in base.module.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in base.module.parameters() if p.requires_grad], lr=1e-3)
    x = row.input()
    loss = (base(x, row.head(base)) - 0.5).abs().mean()
    loss.backward()
    optimizer.step()

    after = base.module.state_dict()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    adapter_keys = {key for key in before if ".adapter." in key}
    assert changed and changed <= adapter_keys
    assert any(key.endswith(f"adapter.{row.first_to_move}") for key in changed)
    remove_adapters(base.module)
    restored = base.module.state_dict()
    assert restored.keys() == original.keys()
    assert all(torch.equal(restored[key], original[key]) for key in original)  # BN buffers included


@table
def test_swapping_reproduces_each_adapter(row: Row, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = row.run(row.base())
    references = {}
    for label, seed, config in (("a", 1, None), ("b", 2, None), ("c", 3, row.other_config)):
        base = adapted(row, seed, config)
        adapter = read_adapter(save(row, base, tmp_path / f"{label}.safetensors", config))
        references[label] = (adapter, row.run(base))

    fresh = row.base()
    apply_adapter(fresh, references["a"][0])
    assert torch.equal(row.run(fresh), references["a"][1])
    modules_before = list(fresh.module.modules())

    builds = []
    method = METHODS[row.method]
    counting = dataclasses.replace(method, build=lambda site, cfg: builds.append(site) or method.build(site, cfg))
    monkeypatch.setitem(METHODS, row.method, counting)
    apply_adapter(fresh, references["b"][0])  # same method and config: tensors copied, nothing built
    assert builds == []
    assert list(fresh.module.modules()) == modules_before
    assert torch.equal(row.run(fresh), references["b"][1])
    monkeypatch.undo()

    for label in ("c", "a", None, "b", "c", "a"):
        apply_adapter(fresh, None if label is None else references[label][0])
        assert torch.equal(row.run(fresh), plain if label is None else references[label][1]), label
    # Nothing accumulates per adapter used: the module tree is the one injected for "a".
    assert len(list(fresh.module.modules())) == len(modules_before)


@table
def test_adapter_for_other_weights_is_refused_unless_forced(row: Row, tmp_path: Path) -> None:
    base = adapted(row, seed=1)
    expected = row.run(base)
    adapter = read_adapter(save(row, base, tmp_path / "a.safetensors"))

    other = dataclasses.replace(row.base(), name="retrained", sha256="0" * 64)
    with pytest.raises(AdapterMismatchError, match="--force to load anyway") as refused:
        apply_adapter(other, adapter)
    assert base.name in str(refused.value) and "retrained" in str(refused.value)
    apply_adapter(other, adapter, force=True)
    assert torch.equal(row.run(other), expected)

    key = next(iter(adapter.state))
    misfit = dataclasses.replace(adapter, state={**adapter.state, key: torch.zeros(7, 7)})
    with pytest.raises(AdapterMismatchError, match="not even with --force"):
        check_compatible(misfit, other, force=True)


@pytest.mark.parametrize(
    "row", [row for row in ROWS if row.method == "adaptir" and row.config.frequency], ids=lambda row: row.id
)
def test_frequency_branch_runs_in_float32_under_bf16_autocast(row: Row) -> None:
    base = adapted(row, seed=1)
    seen = []
    hooks = [
        child.register_forward_hook(lambda branch, args, out: seen.append((branch, args[0], out)))
        for child in base.module.modules()
        if isinstance(child, FrequencyBranch)
    ]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = base(row.input(), row.head(base))
    for hook in hooks:
        hook.remove()
    assert torch.isfinite(out).all()
    assert seen and any(x.dtype == torch.bfloat16 for _, x, _ in seen)  # autocast really reached the adapter
    with torch.no_grad():
        for branch, x, fam_out in seen:
            # Same result as a plain float32 run on the same input: no step was done in bf16.
            assert fam_out.dtype == torch.float32
            torch.testing.assert_close(fam_out, branch(x.float()), rtol=1e-5, atol=1e-5)


# ---- AdaptIR specifics ----

def test_adaptir_sizes_follow_the_paper() -> None:
    # IPT setting: d = 576 -> h = 24, r = 12: 29,069 parameters per layer (0.583 % over 24 layers).
    assert sum(p.numel() for p in AdaptIR(576).parameters()) == 29_069
    small = AdaptIR(60)  # EMT: d // 24 = 2 is floored to 8, reductions to >= 1
    assert small.down[0].out_channels == 8 and small.local.a.shape == (8, 4)
    assert small.channel_gate[1].out_channels == 1
    custom = AdaptIR(60, AdaptIRConfig(hidden=32, rank=5))
    assert custom.local.a.shape == (32, 5) and custom.channel_gate[1].out_channels == 4
    with pytest.raises(ValueError, match="positive integer"):
        AdaptIRConfig(hidden=0)


def test_adaptir_ablations_drop_their_modules() -> None:
    full = AdaptIR(60)
    count = {name: sum(p.numel() for p in AdaptIR(60, config).parameters()) for name, config in ABLATIONS.items()}
    assert all(value < sum(p.numel() for p in full.parameters()) for value in count.values())
    assert AdaptIR(60, ABLATIONS["no-lim"]).local is None and AdaptIR(60, ABLATIONS["no-fam"]).frequency is None
    assert AdaptIR(60, ABLATIONS["no-cgm"]).channel_score is None
    summed = AdaptIR(60, ABLATIONS["sum"])
    assert summed.channel_gate is None and summed.spatial_gate is None and summed.local is not None
    with pytest.raises(ValueError, match="needs the local or the frequency branch"):
        AdaptIRConfig(local=False, frequency=False)


def test_adaptir_without_batch_norm_computes_the_same_in_training_and_inference() -> None:
    """BatchNorm's running statistics differ from a batch's; the per-pixel LayerNorm has none."""
    torch.manual_seed(0)
    with_bn, without = AdaptIR(24, AdaptIRConfig(hidden=8)), AdaptIR(24, AdaptIRConfig(hidden=8, batch_norm=False))
    assert isinstance(with_bn.down[1], nn.BatchNorm2d) and not isinstance(without.down[1], nn.BatchNorm2d)
    for adapter in (with_bn, without):
        nn.init.normal_(adapter.up.weight)  # a trained adapter: its output is not 0
    x = torch.randn(3, 24, 8, 8) * 4 + 1
    with torch.no_grad():
        trained = [adapter.train()(x) for adapter in (with_bn, without)]
        inferred = [adapter.eval()(x) for adapter in (with_bn, without)]
        alone = without.eval()(x[:1])
    assert not torch.allclose(trained[0], inferred[0], atol=1e-3), "BatchNorm does depend on the mode"
    torch.testing.assert_close(trained[1], inferred[1])
    torch.testing.assert_close(alone, inferred[1][:1])  # and on nothing else in the batch
    assert not any(b for _, b in without.named_buffers()), "nothing to carry in the file but weights"


def test_lora_merges_exactly_the_low_rank_update() -> None:
    layer = nn.Linear(6, 5)
    lora = LoRA(layer, LoRAConfig(rank=2, alpha=3.0))
    with torch.no_grad():
        lora.up.normal_()
    x = torch.randn(4, 6)
    branch = layer(x) + 1.5 * (x @ lora.down.T @ lora.up.T)
    torch.testing.assert_close(AdaptedLayer(layer, lora)(x), branch)

    base = tiny_emt_base()  # EMT's layers shift their input before the 1x1 conv: the update must see it too
    fc1 = base.module.body[0].mlp_list[0].fc1
    lora = LoRA(fc1, LoRAConfig(rank=3))
    with torch.no_grad():
        lora.up.normal_()
    x = torch.randn(1, fc1.in_channels, 6, 6)
    delta = (lora.up @ lora.down).reshape(fc1.weight.shape) * lora.scaling
    shifted = shift_pixels(x, fc1.channel_sets, circular=False)  # what EMT's ShiftConv1x1 really convolves
    expected = fc1(x) + torch.nn.functional.conv2d(shifted, delta)
    torch.testing.assert_close(AdaptedLayer(fc1, lora)(x), expected)


@pytest.mark.parametrize(
    ("method", "source"), [("adapter", "output"), ("adaptformer", "input")], ids=["adapter", "adaptformer"]
)
def test_bottlenecks_read_the_mlps_output_or_input(method: str, source: str) -> None:
    base = toy_conv_base()
    inject(base.module, base.descriptor, method)
    layer = base.module.blocks[0].mlp
    randomize_adapters(base.module, seed=1)
    n = torch.randn(2, TOY_DIM, 5, 5)
    with torch.no_grad():
        out = layer.base_layer(n)
        branch = layer.adapter(out if source == "output" else n)
        torch.testing.assert_close(layer(n), out + branch)
    assert layer.adapter.scale == (1.0 if method == "adapter" else AdaptFormerConfig().scale)


def test_layer_methods_adapt_the_dense_layers_of_each_mlp() -> None:
    base = tiny_compactir_base()  # MLP: fc1, depthwise 3x3, fc2: the depthwise kernel is left alone
    names = inject(base.module, base.descriptor, "ssf")
    assert [name.rsplit(".", 1)[1] for name in names] == ["fc1", "fc2"] * TINY_COMPACTIR.blocks
    fc1 = adapted_layers(base.module)[names[0]]
    assert fc1.adapter.scale.shape == (TINY_COMPACTIR.dim * TINY_COMPACTIR.mlp_ratio,)
    x = torch.randn(1, TINY_COMPACTIR.dim, 4, 4)
    with torch.no_grad():
        fc1.adapter.scale.uniform_(0.5, 1.5)
        fc1.adapter.shift.normal_()
        expected = fc1.base_layer(x) * fc1.adapter.scale[:, None, None] + fc1.adapter.shift[:, None, None]
        torch.testing.assert_close(fc1(x), expected)
    token_base = toy_token_base()
    inject(token_base.module, token_base.descriptor, "ssf")
    linear = token_base.module.blocks[0].mlp[0]
    assert isinstance(linear, AdaptedLayer) and linear.adapter.channels_last


def test_method_configs_parse_command_line_values() -> None:
    assert METHODS["lora"].config_from_strings({"rank": "8", "alpha": "16"}) == LoRAConfig(rank=8, alpha=16.0)
    assert METHODS["adaptir"].config_from_strings({"frequency": "false", "hidden": "none"}) == AdaptIRConfig(
        frequency=False
    )
    with pytest.raises(ValueError, match="no field 'width'; its fields: hidden, scale"):
        METHODS["adaptformer"].config_from_strings({"width": "3"})
    with pytest.raises(ValueError, match="rank takes an integer, got 'two'"):
        METHODS["lora"].config_from_strings({"rank": "two"})
    with pytest.raises(ValueError, match="LoRAConfig.rank must be a positive integer"):
        LoRAConfig(rank=0)


def test_seq_first_tokens_are_viewed_on_a_row_major_grid() -> None:
    class Record(nn.Module):
        def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
            self.seen = feature_map
            return 2 * feature_map

    tokens = torch.randn(6, 2, 4)  # L = 6 tokens on a 2 x 3 grid, batch 2, d = 4
    layer = AdaptedMLP(nn.Identity(), Record(), "seq_first", grid=(2, 3))
    assert torch.equal(layer(tokens), 3 * tokens)
    assert torch.equal(layer.adapter.seen[1, :, 1, 2], tokens[1 * 3 + 2, 1])
    with pytest.raises(ValueError, match="square grid"):
        AdaptedMLP(nn.Identity(), Record(), "seq_first")(tokens)


def test_inject_fails_loudly_and_refuses_double_injection() -> None:
    base = toy_conv_base()
    nothing = dataclasses.replace(base.descriptor, mlp_pattern=r"blocks\.\d+\.ffn")
    with pytest.raises(ValueError, match="no MLP modules matched"):
        inject(base.module, nothing, "adaptir", AdaptIRConfig())
    inject(base.module, base.descriptor, "adaptir", AdaptIRConfig())
    with pytest.raises(ValueError, match="already injected"):
        inject(base.module, base.descriptor, "adaptir", AdaptIRConfig())
    with pytest.raises(KeyError, match="unknown adapter method 'nope'; known methods: adaptir"):
        inject(toy_conv_base().module, base.descriptor, "nope", None)


def test_load_adapter_state_dict_is_strict() -> None:
    base = adapted(ROWS[0], seed=1)
    state = {key: value.clone() for key, value in adapter_state_dict(base.module).items()}
    dropped = next(iter(state))
    broken = {key: value for key, value in state.items() if key != dropped}
    broken["blocks.9.mlp.up.weight"] = torch.zeros(1)
    with pytest.raises(AdapterMismatchError) as error:
        load_adapter_state_dict(base.module, broken)
    assert f"missing (1): {dropped}" in str(error.value)
    assert "unexpected (1): blocks.9.mlp.up.weight" in str(error.value)
    with pytest.raises(AdapterMismatchError, match="wrong shape"):
        load_adapter_state_dict(base.module, state | {"blocks.0.mlp.up.weight": torch.zeros(8, 3, 1, 1)})


def test_read_adapter_explains_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(AdapterFileError, match="not found"):
        read_adapter(tmp_path / "missing.safetensors")
    (tmp_path / "text.safetensors").write_text("not a tensor file")
    with pytest.raises(AdapterFileError, match="not a .safetensors adapter file"):
        read_adapter(tmp_path / "text.safetensors")
    save_file({"head.weight": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(AdapterFileError, match="not an adaptir adapter"):
        read_adapter(tmp_path / "weights.safetensors")

    base = adapted(ROWS[0], seed=1)
    path = save(ROWS[0], base, tmp_path / "a.safetensors")
    adapter = read_adapter(path)
    metadata = {
        "format": "adaptir-adapter", "format_version": "99", "method": "adaptir", "method_config": "{}",
        "base_name": "x", "base_sha256": "0", "base_architecture": "toy", "task": "denoise", "scale": "1",
    }
    save_file(dict(adapter.state), str(tmp_path / "newer.safetensors"), metadata=metadata)
    with pytest.raises(AdapterFileError, match="newer adaptir"):
        read_adapter(tmp_path / "newer.safetensors")
    metadata |= {"format_version": "1", "method_config": json.dumps({"hidden": 8, "blocks": 2})}
    save_file(dict(adapter.state), str(tmp_path / "odd.safetensors"), metadata=metadata)
    with pytest.raises(AdapterFileError, match="unreadable adapter metadata"):
        read_adapter(tmp_path / "odd.safetensors")


def test_failed_save_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    row = ROWS[0]
    base = adapted(row, seed=1)
    path = save(row, base, tmp_path / "a.safetensors")
    good = path.read_bytes()

    def interrupted(state: dict, metadata: dict) -> bytes:
        raise KeyboardInterrupt  # while the temporary file is open

    monkeypatch.setattr(file_format, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(row, base, path)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


def test_save_refuses_a_task_the_base_cannot_run(tmp_path: Path) -> None:
    base = adapted(ROWS[0], seed=1)
    with pytest.raises(UnknownTaskError, match="no head for task 'sr4'"):
        save_adapter(
            tmp_path / "a.safetensors", base.module, method="adaptir", config=AdaptIRConfig(), base=base, task="sr4"
        )
    with pytest.raises(AdapterMismatchError, match="are not adaptir adapters"):
        save_adapter(
            tmp_path / "a.safetensors", base.module, method="adaptir", config=AdaptIRConfig(hidden=16), base=base,
            task="denoise",
        )
