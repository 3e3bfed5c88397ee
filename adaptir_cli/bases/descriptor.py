"""What the rest of adaptir needs to know about a frozen base, independent of its architecture."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# How the tensor entering a transformer MLP is laid out, so that an adapter can view it as the
# (N, d, H, W) feature map AdaptIR works on:
#   "nchw"      - already a feature map (EMT, the default base);
#   "seq_first" - tokens (L, N, d) in row-major order of a square sqrt(L) x sqrt(L) grid (IPT).
MLPLayout = Literal["nchw", "seq_first"]


@dataclass(frozen=True)
class BaseDescriptor:
    """Facts about one loaded base model.

    `heads` maps a head name (a task the base was trained for: "sr4", "denoise30", ...) to its
    output scale and to the index the architecture's `forward(x, head)` expects.
    """

    architecture: str
    heads: dict[str, "Head"]
    # Value of white in the network's input and output (EMT and IPT work on 0..255).
    pixel_range: float = 1.0
    # Inputs smaller than this (in either dimension) are rejected by the architecture.
    min_size: int = 1
    # If set, the network only accepts inputs of exactly this size (IPT: 48 x 48 patches).
    fixed_size: int | None = None
    # Preferred tile multiple (no internal padding when tiles are multiples of it); tiles also
    # start on multiples of it, so that they cut the image into windows as a whole-image pass does.
    size_multiple: int = 1
    # Input pixels two neighbouring tiles share by default (`adaptir restore --overlap`): set from
    # the architecture's receptive field or attention window and measured so that tiled results
    # stay within 0.01 dB of whole-image ones (docs/performance.md, benchmarks/tiling_quality.py).
    tile_overlap: int = 16
    # Whether bf16 autocast keeps the outputs within quantisation error of fp32.
    supports_bf16: bool = False
    # Regular expression matching the qualified names of the transformer MLP modules.
    mlp_pattern: str = ""
    mlp_layout: MLPLayout = "nchw"
    # Channel width d at the MLP input.
    mlp_dim: int = 0
    # Free-form hyper-parameters inferred from the weights (shown by `adaptir models info`).
    config: dict[str, object] = field(default_factory=dict)

    def head(self, name: str) -> "Head":
        try:
            return self.heads[name]
        except KeyError:
            known = ", ".join(sorted(self.heads))
            raise KeyError(f"this {self.architecture} base has no head {name!r}; it has: {known}") from None


@dataclass(frozen=True)
class Head:
    index: int
    scale: int
    # Input pixels mirrored around the image before a restore with this head (cropped off after):
    # a head whose convolutions pad with zeros darkens or rings at the image border, faintly for
    # the task it was trained for and by tens of levels once an adapter amplifies its output
    # (low light). 0: the image as it is (the published bases, whose numbers stay the papers').
    border: int = 0
