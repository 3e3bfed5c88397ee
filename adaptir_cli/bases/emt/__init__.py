"""EMT base: recognise its checkpoints, infer the hyper-parameters from tensor shapes, build it.

The published files (Fried-Rice-Lab/EMT, `EMT_LSR_x{2,3,4}.pth`) already use the module's own
key names, so canonicalisation is the identity.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from adaptir_cli.bases.architecture import StateDict
from adaptir_cli.bases.descriptor import BaseDescriptor, Head
from adaptir_cli.bases.emt.arch import EMT, MIN_SIZE, SIZE_MULTIPLE, WINDOWS, EMTConfig
from adaptir_cli.bases.loading import WeightsError

# Keys no other supported architecture has; together they identify an EMT checkpoint.
_SIGNATURE = ("sub_mean.weight", "head.weight", "tail.0.weight", "body.0.mlp_list.0.fc1.mask")
# The 36 (groups x layers) feed-forward modules that adapters are attached to.
MLP_PATTERN = r"body\.\d+\.mlp_list\.\d+"
# Stripes are 32 px long and the shifted layers roll them around the map without a mask, so a
# tile's edge reaches about one stripe into it: tiles share the longest stripe side.
TILE_OVERLAP = max(max(window) for window in WINDOWS)


def infer_config(state: StateDict) -> EMTConfig:
    """Read the hyper-parameters off the tensor shapes (EMT.md section 7)."""
    tail_channels = state["tail.0.weight"].shape[0]
    scale = math.isqrt(tail_channels // 3)
    if 3 * scale * scale != tail_channels:
        raise WeightsError(f"EMT tail.0.weight has {tail_channels} output channels; expected 3 * scale^2")
    dim = state["head.weight"].shape[0]
    hidden = state["body.0.mlp_list.0.fc1.weight"].shape[0]
    if hidden % dim:
        raise WeightsError(f"EMT MLP width {hidden} is not a multiple of the feature width {dim}")
    groups = len({m.group(1) for key in state if (m := re.match(r"body\.(\d+)\.", key))})
    layers = sum(1 for key in state if re.fullmatch(r"body\.0\.mlp_list\.\d+\.fc1\.weight", key))
    attention = sum(1 for key in state if re.fullmatch(r"body\.0\.sa_list\.\d+\.attn\.0\.weight", key))
    return EMTConfig(
        scale=scale, dim=dim, groups=groups, layers=layers, attention_layers=attention, mlp_ratio=hidden // dim
    )


def describe(config: EMTConfig) -> BaseDescriptor:
    return BaseDescriptor(
        architecture="emt",
        heads={f"sr{config.scale}": Head(index=0, scale=config.scale)},
        pixel_range=255.0,
        min_size=MIN_SIZE,
        size_multiple=SIZE_MULTIPLE,
        tile_overlap=TILE_OVERLAP,
        # q.q^T logits reach a few hundred; the softmax is only verified in float32 (EMT.md 9.11).
        supports_bf16=False,
        mlp_pattern=MLP_PATTERN,
        mlp_layout="nchw",
        mlp_dim=config.dim,
        config={
            "dim": config.dim,
            "groups": config.groups,
            "layers": config.layers,
            "attention_layers": config.attention_layers,
            "mlp_ratio": config.mlp_ratio,
            "scale": config.scale,
        },
    )


class EMTArchitecture:
    name = "emt"

    def detect(self, state_dict: StateDict) -> bool:
        return all(key in state_dict for key in _SIGNATURE)

    def canonicalize(self, state_dict: StateDict) -> StateDict:
        return state_dict

    def build(self, state_dict: StateDict) -> tuple[nn.Module, BaseDescriptor]:
        config = infer_config(state_dict)
        module = EMT(config)
        _check_masks(module, state_dict)
        return module, describe(config)


def _check_masks(module: EMT, state: StateDict) -> None:
    # The module shifts pixels by construction instead of convolving with the stored masks, so a
    # file whose masks differ from that construction would silently run a different network.
    for name, mask in module.named_buffers():
        stored = state.get(name)
        # Missing or misshapen masks are left to the strict loader, which lists them all.
        if not name.endswith(".mask") or stored is None or stored.shape != mask.shape:
            continue
        if not torch.equal(stored, mask):
            raise WeightsError(
                f"{name} in these EMT weights differs from EMT's fixed shift pattern; "
                "only checkpoints of the published EMT architecture are supported."
            )


architecture = EMTArchitecture()

__all__ = ["EMT", "EMTConfig", "MLP_PATTERN", "architecture", "describe", "infer_config"]
