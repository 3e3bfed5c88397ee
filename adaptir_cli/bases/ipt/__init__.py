"""IPT checkpoints: detection, key canonicalisation and hyper-parameters inferred from shapes.

Reads the official layout (IPT_pretrain.pt: six tasks; IPT_sr2.pt and the other per-task files:
one) and our canonical layout, which differs only by the `mlp` submodule of each transformer layer.
"""

from __future__ import annotations

import dataclasses
import math
import re

import torch

from adaptir_cli.bases.architecture import StateDict
from adaptir_cli.bases.descriptor import BaseDescriptor, Head
from adaptir_cli.bases.ipt.arch import IPT, TINY_CONFIG, IPTConfig
from adaptir_cli.bases.loading import WeightsError

# Head names of the six-task IPT_pretrain checkpoint, in task order, and their scales.
PRETRAIN_HEADS = {"sr2": 2, "sr3": 3, "sr4": 4, "derain": 1, "denoise30": 1, "denoise50": 1}
# The official heads count; the weights do not record it.
DEFAULT_NUM_HEADS = 12

_OFFICIAL_MLP = re.compile(r"(body\.(?:encoder|decoder)\.layers\.\d+\.)(linear[12]\.)")
_CANONICAL_MLP = re.compile(r"(body\.(?:encoder|decoder)\.layers\.\d+\.)mlp\.(linear[12]\.)")


def canonicalize(state: StateDict) -> StateDict:
    """Official `...layers.{i}.linear1.*` -> our `...layers.{i}.mlp.linear1.*`; idempotent."""
    return {_OFFICIAL_MLP.sub(r"\1mlp.\2", key, count=1): value for key, value in state.items()}


def official_state_dict(model: IPT) -> StateDict:
    """The model's tensors under the official checkpoint's key names (shared, not copied)."""
    return {_CANONICAL_MLP.sub(r"\1\2", key, count=1): value for key, value in model.state_dict().items()}


def detect(state: StateDict) -> bool:
    mlp_keys = ("body.encoder.layers.0.linear1.weight", "body.encoder.layers.0.mlp.linear1.weight")
    return (
        "body.query_embed.weight" in state
        and "body.linear_encoding.weight" in state
        and "body.encoder.layers.0.self_attn.in_proj_weight" in state
        and any(key in state for key in mlp_keys)
    )


def _shape(state: StateDict, key: str) -> torch.Size:
    try:
        return state[key].shape
    except KeyError:
        raise WeightsError(
            f"these IPT weights lack {key!r}, which is needed to infer the model's shape; "
            "the file is incomplete or not an IPT checkpoint"
        ) from None


def _count(state: StateDict, pattern: str) -> int:
    """1 + the largest index captured by `pattern` over the keys (0 when none matches)."""
    regex = re.compile(pattern)
    indices = [int(m.group(1)) for key in state if (m := regex.fullmatch(key))]
    return max(indices, default=-1) + 1


def _tail_scale(state: StateDict, task: int, n_feats: int) -> int:
    """x3 is one conv to 9 * n_feats channels, 2**k is k convs to 4 * n_feats, x1 has none."""
    widths = []
    while (key := f"tail.{task}.0.{2 * len(widths)}.weight") in state:
        widths.append(state[key].shape[0])
    if widths == [9 * n_feats]:
        return 3
    if all(width == 4 * n_feats for width in widths):
        return 2 ** len(widths)
    raise WeightsError(f"IPT tail {task} has an upsampler of unknown shape (conv widths {widths}, n_feats {n_feats})")


def default_num_heads(dim: int) -> int:
    """12 as the official model when it divides `dim`, else the largest divisor of `dim` below 12.

    A guess for non-official widths, since checkpoints do not store the heads count.
    """
    return max(h for h in range(1, DEFAULT_NUM_HEADS + 1) if dim % h == 0)


def infer_config(state: StateDict) -> IPTConfig:
    """Hyper-parameters from the tensor shapes of a canonical IPT state dict."""
    n_feats, colours = _shape(state, "head.0.0.weight")[:2]
    if colours != 3:
        raise WeightsError(f"IPT weights for {colours}-channel images are not supported (RGB only)")
    dim, flat = _shape(state, "body.linear_encoding.weight")
    patch_dim = math.isqrt(flat // n_feats)
    tokens = _shape(state, "body.position_encoding.pe.weight")[0]
    grid = math.isqrt(tokens)
    if dim != flat or patch_dim**2 * n_feats != flat or grid**2 != tokens:
        raise WeightsError(
            f"IPT body shapes do not fit together: embedding {dim}, flattened patch {flat}, "
            f"n_feats {n_feats}, {tokens} tokens (expected square patches and a square token grid)"
        )
    tasks = _count(state, r"head\.(\d+)\.0\.weight")
    queries = _shape(state, "body.query_embed.weight")[0]
    if queries != tasks:
        raise WeightsError(f"these IPT weights have {tasks} task heads but {queries} task queries; they must match")
    return IPTConfig(
        n_feats=n_feats,
        patch_dim=patch_dim,
        patch_size=grid * patch_dim,
        num_heads=default_num_heads(dim),
        encoder_layers=_count(state, r"body\.encoder\.layers\.(\d+)\..*"),
        decoder_layers=_count(state, r"body\.decoder\.layers\.(\d+)\..*"),
        hidden_dim=_shape(state, "body.encoder.layers.0.mlp.linear1.weight")[0],
        scales=tuple(_tail_scale(state, t, n_feats) for t in range(tasks)),
    )


def head_names(scales: tuple[int, ...]) -> list[str]:
    """The pretrain file's task names; otherwise names by scale ("sr4", "x1"), indexed when repeated."""
    if scales == tuple(PRETRAIN_HEADS.values()):
        return list(PRETRAIN_HEADS)
    names = [f"sr{s}" if s > 1 else "x1" for s in scales]
    return [f"{name}-{t}" if names.count(name) > 1 else name for t, name in enumerate(names)]


def describe(config: IPTConfig) -> BaseDescriptor:
    names = head_names(config.scales)
    return BaseDescriptor(
        architecture="ipt",
        heads={name: Head(index=t, scale=s) for t, (name, s) in enumerate(zip(names, config.scales))},
        pixel_range=255.0,
        min_size=1,
        fixed_size=config.patch_size,
        size_multiple=config.patch_size,
        # Stride 40 instead of the official 12 (METHOD.md section 8): about 9x fewer patch
        # forwards; not measured against the official grid (no trained IPT weights here).
        tile_overlap=8,
        supports_bf16=True,
        mlp_pattern=r"body\.(encoder|decoder)\.layers\.\d+\.mlp",
        mlp_layout="seq_first",
        mlp_dim=config.embedding_dim,
        config={**dataclasses.asdict(config), "embedding_dim": config.embedding_dim, "tokens": config.tokens},
    )


class IPTArchitecture:
    name = "ipt"

    def detect(self, state_dict: StateDict) -> bool:
        return detect(state_dict)

    def canonicalize(self, state_dict: StateDict) -> StateDict:
        return canonicalize(state_dict)

    def build(self, state_dict: StateDict) -> tuple[IPT, BaseDescriptor]:
        config = infer_config(state_dict)
        try:
            config.validate()
        except ValueError as error:
            raise WeightsError(f"these IPT weights imply an unusable configuration: {error}") from None
        return IPT(config), describe(config)


architecture = IPTArchitecture()

__all__ = [
    "IPT", "IPTConfig", "TINY_CONFIG", "architecture", "canonicalize", "describe", "detect",
    "head_names", "infer_config", "official_state_dict",
]
