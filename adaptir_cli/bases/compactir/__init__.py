"""CompactIR, adaptir's own default base: detection, hyper-parameters from shapes, descriptor.

Checkpoints are the module's own state dict, so canonicalisation is the identity. Everything the
module needs is in the tensors: head names are the `heads.{name}.*` keys, each head's scale follows
from its head and tail conv shapes, and the attention heads count and window from the shape of
the relative-position bias table (heads, (2 * window - 1)^2).
"""

from __future__ import annotations

import dataclasses
import math
import re

from torch import nn

from adaptir_cli.bases.architecture import StateDict
from adaptir_cli.bases.compactir.arch import DEFAULT_TASKS, CompactIR, CompactIRConfig, infer_scale
from adaptir_cli.bases.descriptor import BaseDescriptor, Head
from adaptir_cli.bases.loading import WeightsError

# The `blocks` feed-forward modules AdaptIR adapters wrap.
MLP_PATTERN = r"body\.\d+\.mlp"
_HEAD_KEY = re.compile(r"heads\.([^.]+)\.conv\.weight")
_TAIL_KEY = re.compile(r"tails\.([^.]+)\.conv\.weight")
_REFINE_KEY = re.compile(r"tails\.([^.]+)\.refine\.weight")
_BLOCK_KEY = re.compile(r"body\.(\d+)\.")
_SIGNATURE = ("body.0.attn.relative_bias", "body.0.mlp.fc1.weight", "body_end.weight")


def build_compactir(config: CompactIRConfig | None = None) -> CompactIR:
    """A freshly initialised CompactIR (identity / bicubic at the start), e.g. for pre-training."""
    return CompactIR(config or CompactIRConfig())


def infer_config(state: StateDict) -> CompactIRConfig:
    """The hyper-parameters of a CompactIR state dict, read from its keys and tensor shapes."""
    heads = {m.group(1): state[key] for key in state if (m := _HEAD_KEY.fullmatch(key))}
    tails = {m.group(1): state[key] for key in state if (m := _TAIL_KEY.fullmatch(key))}
    if not heads or heads.keys() != tails.keys():
        raise WeightsError(
            f"CompactIR weights need one head and one tail per task; heads {sorted(heads)}, tails {sorted(tails)}"
        )
    # Tails with an output-resolution conv (refine > 0): its input is `refine` channels + RGB.
    widths = {m.group(1): state[key].shape[1] - 3 for key in state if (m := _REFINE_KEY.fullmatch(key))}
    if widths and (widths.keys() != tails.keys() or len(set(widths.values())) != 1):
        raise WeightsError(f"CompactIR tails must all have the same output-resolution conv or none; got {widths}")
    refine = next(iter(widths.values()), 0)
    try:
        tasks = tuple((name, infer_scale(heads[name].shape[1], tails[name].shape[0], refine or 3)) for name in heads)
    except ValueError as error:
        raise WeightsError(f"CompactIR weights have a head/tail pair of unknown shape: {error}") from None
    heads_count, table = state["body.0.attn.relative_bias"].shape
    window = (math.isqrt(table) + 1) // 2
    if (2 * window - 1) ** 2 != table:
        raise WeightsError(f"CompactIR relative-position table has {table} entries, not (2 * window - 1)^2")
    dim = state["body_end.weight"].shape[0]
    hidden = state["body.0.mlp.fc1.weight"].shape[0]
    if hidden % dim:
        raise WeightsError(f"CompactIR MLP width {hidden} is not a multiple of the feature width {dim}")
    blocks = 1 + max(int(m.group(1)) for key in state if (m := _BLOCK_KEY.match(key)))
    try:
        return CompactIRConfig(
            dim=dim, blocks=blocks, heads=heads_count, window=window, mlp_ratio=hidden // dim, tasks=tasks,
            refine=refine,
        )
    except ValueError as error:
        raise WeightsError(f"these CompactIR weights imply an unusable configuration: {error}") from None


def describe(config: CompactIRConfig) -> BaseDescriptor:
    return BaseDescriptor(
        architecture="compactir",
        # A head's index is its position among the sorted names, as CompactIR.forward expects.
        # x1 heads mirror one window of their half-resolution body (16 px) around the image: their
        # zero-padded convolutions left a border up to 55 levels dark under the low-light adapter,
        # 2.5 with it (docs/training.md, "The low-light checkerboard"). A multiple of the window
        # keeps the body's windows and 2 x 2 phases where a whole-image pass has them.
        heads={
            name: Head(index=i, scale=scale, border=config.size_multiple if scale == 1 else 0)
            for i, (name, scale) in enumerate(config.tasks)
        },
        pixel_range=1.0,
        min_size=1,
        size_multiple=config.size_multiple,
        # Two attention windows at the x1 heads' half-resolution body (2 x 2 x 8 px): one window
        # (16 px) moved x1 denoising by 0.025 dB at --tile 64 (docs/performance.md).
        tile_overlap=2 * config.size_multiple,
        # Measured (CPU autocast, random default-size models): bf16 moves outputs by up to 3 levels
        # of 255, beyond quantisation error; a model this small gains little from bf16 anyway.
        supports_bf16=False,
        mlp_pattern=MLP_PATTERN,
        mlp_layout="nchw",
        mlp_dim=config.dim,
        config={**dataclasses.asdict(config), "tasks": dict(config.tasks)},
    )


class CompactIRArchitecture:
    name = "compactir"

    def detect(self, state_dict: StateDict) -> bool:
        return all(key in state_dict for key in _SIGNATURE) and any(_HEAD_KEY.fullmatch(key) for key in state_dict)

    def canonicalize(self, state_dict: StateDict) -> StateDict:
        return state_dict

    def build(self, state_dict: StateDict) -> tuple[nn.Module, BaseDescriptor]:
        config = infer_config(state_dict)
        return CompactIR(config), describe(config)


architecture = CompactIRArchitecture()

__all__ = [
    "DEFAULT_TASKS", "MLP_PATTERN", "CompactIR", "CompactIRConfig", "architecture", "build_compactir",
    "describe", "infer_config",
]
