"""LMLT-tiny (jwgdmkj/LMLT, MIT) as an adaptir base: detection, shape inference, descriptor.

The published files (`{"params", "params_ema"}`; `read_state_dict` takes `params`, the weights
the authors evaluate) already use the module's own key names, so canonicalisation is the identity.
"""

from __future__ import annotations

import math
import re

from torch import nn

from adaptir_cli.bases.architecture import StateDict
from adaptir_cli.bases.descriptor import BaseDescriptor, Head
from adaptir_cli.bases.lmlt.arch import LMLT, WINDOW_SIZE, min_input_size, padding_multiple
from adaptir_cli.bases.loading import WeightsError

# Keys only LMLT checkpoints have together.
_SIGNATURE = ("to_feat.weight", "to_img.0.weight", "feats.0.lhsb.aggr.weight", "feats.0.ccm.ccm.0.weight")
_BLOCK_KEY = re.compile(r"feats\.(\d+)\.")
_LEVEL_KEY = re.compile(r"feats\.0\.lhsb\.mfr\.(\d+)\.")


class LMLTArchitecture:
    name = "lmlt"

    def detect(self, state_dict: StateDict) -> bool:
        return all(key in state_dict for key in _SIGNATURE)

    def canonicalize(self, state_dict: StateDict) -> StateDict:
        return state_dict

    def build(self, state_dict: StateDict) -> tuple[nn.Module, BaseDescriptor]:
        config = infer_config(state_dict)
        module = LMLT(**config)
        descriptor = BaseDescriptor(
            architecture=self.name,
            heads={f"sr{config['scale']}": Head(index=0, scale=config["scale"])},
            pixel_range=1.0,
            min_size=min_input_size(config["levels"]),
            size_multiple=padding_multiple(config["levels"]),
            # The coarsest level's 8 x 8 windows span 64 input px: a tile's edge reaches one of them in.
            tile_overlap=padding_multiple(config["levels"]),
            # Measured (CPU autocast, x2 Set5): bf16 moves outputs by up to 3 levels of 255 and
            # costs 0.03 dB, beyond quantisation error, so fp32 it stays.
            supports_bf16=False,
            # The CCM modules receive LN2(f) (the norm is applied in the block), as AdaptIR needs.
            mlp_pattern=r"feats\.\d+\.ccm",
            mlp_layout="nchw",
            mlp_dim=config["dim"],
            config={**config, "window_size": WINDOW_SIZE},
        )
        return module, descriptor


def infer_config(state_dict: StateDict) -> dict[str, int]:
    """LMLT constructor arguments read from tensor shapes and key indices."""
    dim = state_dict["to_feat.weight"].shape[0]
    out_channels = state_dict["to_img.0.weight"].shape[0]
    scale = math.isqrt(out_channels // 3)
    if 3 * scale * scale != out_channels:
        raise WeightsError(
            f"LMLT tail has {out_channels} output channels, not 3 x scale^2; "
            "the file is not an RGB super-resolution LMLT checkpoint."
        )
    blocks = 1 + max(int(m.group(1)) for key in state_dict if (m := _BLOCK_KEY.match(key)))
    levels = 1 + max(int(m.group(1)) for key in state_dict if (m := _LEVEL_KEY.match(key)))
    if dim % levels:
        raise WeightsError(f"LMLT width {dim} does not split into {levels} levels; the file is damaged.")
    ffn_dim = state_dict["feats.0.ccm.ccm.0.weight"].shape[0]
    return {"scale": scale, "dim": dim, "blocks": blocks, "levels": levels, "ffn_dim": ffn_dim}


architecture = LMLTArchitecture()

__all__ = ["LMLT", "LMLTArchitecture", "architecture", "infer_config"]
