"""IPT, the Image Processing Transformer (Chen et al., CVPR 2021): AdaptIR's frozen base.

Multi-task: task `t` has its own convolutional head, its own tail (upsampler for its scale) and
its own learned decoder query; the transformer body in between is shared. The body works on a
fixed patch (48 x 48 in the official model) cut into patch_dim x patch_dim pieces, one token each,
sequence-first (L, N, d) like the original.

Module and parameter names follow the official checkpoint so that it loads strictly, with one
deliberate difference: each transformer layer's feed-forward lives in an `mlp` submodule
(`...layers.{i}.mlp.linear1`) so that adapters can wrap it from outside. `canonicalize` in this
package maps the official `...layers.{i}.linear1` names onto it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# DIV2K mean colour, as the official MeanShift layers are initialised (the checkpoint stores them).
RGB_MEAN = (0.4488, 0.4371, 0.4040)
RGB_RANGE = 255.0


@dataclass(frozen=True)
class IPTConfig:
    """Hyper-parameters; the defaults are the published IPT_pretrain model (six tasks)."""

    n_feats: int = 64
    # Side of one token's square patch of the feature map; a token has n_feats * patch_dim**2 values.
    patch_dim: int = 3
    # Side of the only input the body accepts (tokens = (patch_size / patch_dim) ** 2).
    patch_size: int = 48
    # Not stored in the weights: 12 in the official model; must divide the embedding dim.
    num_heads: int = 12
    encoder_layers: int = 12
    decoder_layers: int = 12
    # Feed-forward width of every transformer layer (official: 4 x embedding dim).
    hidden_dim: int = 2304
    # Output scale of each task's tail, in task order (official: SR x2, x3, x4, derain, denoise 30, 50).
    scales: tuple[int, ...] = (2, 3, 4, 1, 1, 1)

    @property
    def embedding_dim(self) -> int:
        # The token embedding is residual over the flattened patch, so both widths are equal.
        return self.n_feats * self.patch_dim**2

    @property
    def tokens(self) -> int:
        return (self.patch_size // self.patch_dim) ** 2

    def validate(self) -> None:
        if self.patch_size % self.patch_dim:
            raise ValueError(f"patch_size {self.patch_size} is not a multiple of patch_dim {self.patch_dim}")
        if self.embedding_dim % self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} does not divide the embedding dim {self.embedding_dim}")
        if not self.scales:
            raise ValueError("IPT needs at least one task (scales is empty)")
        for scale in self.scales:
            if scale != 3 and scale & (scale - 1):
                raise ValueError(f"IPT tails upsample by 3 or a power of two, not x{scale}")


# A small variant with the same structure (every tail kind, encoder and decoder) for fast tests.
TINY_CONFIG = IPTConfig(n_feats=8, patch_size=12, encoder_layers=2, decoder_layers=2, hidden_dim=288)


def _conv(c_in: int, c_out: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)


class MeanShift(nn.Conv2d):
    """1x1 convolution adding (sign +1) or subtracting (-1) the dataset mean colour."""

    def __init__(self, sign: int) -> None:
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * RGB_RANGE * torch.tensor(RGB_MEAN))


class ResBlock(nn.Module):
    def __init__(self, n_feats: int, kernel: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(n_feats, n_feats, kernel), nn.ReLU(inplace=True), _conv(n_feats, n_feats, kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _head(n_feats: int) -> nn.Sequential:
    return nn.Sequential(_conv(3, n_feats, 3), ResBlock(n_feats, 5), ResBlock(n_feats, 5))


def _upsampler(n_feats: int, scale: int) -> nn.Sequential:
    """Conv + PixelShuffle stages: one x3 stage, or log2(scale) x2 stages (none for x1)."""
    if scale == 3:
        return nn.Sequential(_conv(n_feats, 9 * n_feats, 3), nn.PixelShuffle(3))
    stages: list[nn.Module] = []
    for _ in range(int(math.log2(scale))):
        stages += [_conv(n_feats, 4 * n_feats, 3), nn.PixelShuffle(2)]
    return nn.Sequential(*stages)


def _tail(n_feats: int, scale: int) -> nn.Sequential:
    return nn.Sequential(_upsampler(n_feats, scale), _conv(n_feats, 3, 3))


class TokenMLP(nn.Module):
    """The feed-forward of one transformer layer: the module adapters wrap.

    Input and output are sequence-first tokens (L, N, d), already layer-normalised on input.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.act = nn.ReLU()
        self.linear2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.act(self.linear1(x)))


def _attention(dim: int, heads: int) -> nn.MultiheadAttention:
    # No biases anywhere in the attention: the checkpoint holds only in_proj_weight and out_proj.weight.
    return nn.MultiheadAttention(dim, heads, bias=False)


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + MLP."""

    def __init__(self, dim: int, heads: int, hidden_dim: int) -> None:
        super().__init__()
        self.self_attn = _attention(dim, heads)
        self.mlp = TokenMLP(dim, hidden_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm1(x)
        x = x + self.self_attn(n, n, n, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class DecoderLayer(nn.Module):
    """Pre-norm self-attention, cross-attention to the encoder output, MLP.

    The task query is added to the queries and keys of the self-attention and to the queries of
    the cross-attention (never to values); the encoder output (memory) enters un-normalised.
    """

    def __init__(self, dim: int, heads: int, hidden_dim: int) -> None:
        super().__init__()
        self.self_attn = _attention(dim, heads)
        self.multihead_attn = _attention(dim, heads)
        self.mlp = TokenMLP(dim, hidden_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        n = self.norm1(x)
        q = n + query
        x = x + self.self_attn(q, q, n, need_weights=False)[0]
        x = x + self.multihead_attn(self.norm2(x) + query, memory, memory, need_weights=False)[0]
        return x + self.mlp(self.norm3(x))


class TransformerStack(nn.Module):
    """Layers under `layers.{i}`, as the checkpoint names them, run in order with the same context."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, *context)
        return x


class LearnedPositionalEncoding(nn.Module):
    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.pe = nn.Embedding(tokens, dim)
        # Part of the official checkpoint, so it stays a persistent buffer for strict loading.
        self.register_buffer("position_ids", torch.arange(tokens).unsqueeze(0))

    def forward(self) -> torch.Tensor:
        """Positions as (L, 1, d), to broadcast over the batch of sequence-first tokens."""
        return self.pe(self.position_ids).transpose(0, 1)


class IPTBody(nn.Module):
    """Feature map (N, n_feats, P, P) -> tokens -> encoder/decoder -> feature map of the same shape."""

    def __init__(self, config: IPTConfig) -> None:
        super().__init__()
        dim, hidden = config.embedding_dim, config.hidden_dim
        self.patch_dim = config.patch_dim
        self.patch_size = config.patch_size
        self.dim = dim
        self.linear_encoding = nn.Linear(dim, dim)
        # Explicit indices: the checkpoint's Sequential had dropouts (rate 0) at 1 and 4.
        self.mlp_head = nn.Sequential(
            OrderedDict([("0", nn.Linear(dim, hidden)), ("2", nn.ReLU()), ("3", nn.Linear(hidden, dim))])
        )
        self.query_embed = nn.Embedding(len(config.scales), dim * config.tokens)
        self.encoder = TransformerStack(
            [EncoderLayer(dim, config.num_heads, hidden) for _ in range(config.encoder_layers)]
        )
        self.decoder = TransformerStack(
            [DecoderLayer(dim, config.num_heads, hidden) for _ in range(config.decoder_layers)]
        )
        self.position_encoding = LearnedPositionalEncoding(config.tokens, dim)

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        p = self.patch_dim
        # (N, C*p*p, L) -> (L, N, C*p*p); tokens in row-major order of the patch grid.
        tokens = F.unfold(x, p, stride=p).permute(2, 0, 1)
        tokens = tokens + self.linear_encoding(tokens)
        query = self.query_embed.weight[task].view(-1, 1, self.dim)

        # Positions enter the encoder input only; the decoder starts from the encoder output and
        # also attends to it (memory).
        memory = self.encoder(tokens + self.position_encoding())
        tokens = self.decoder(memory, memory, query)

        tokens = tokens + self.mlp_head(tokens)
        return F.fold(tokens.permute(1, 2, 0), self.patch_size, p, stride=p)


class IPT(nn.Module):
    """forward(x, head) maps (N, 3, P, P) in 0..255 to (N, 3, sP, sP) for task `head`'s scale s."""

    def __init__(self, config: IPTConfig = IPTConfig()) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.sub_mean = MeanShift(-1)
        self.add_mean = MeanShift(+1)
        self.head = nn.ModuleList([_head(config.n_feats) for _ in config.scales])
        self.body = IPTBody(config)
        self.tail = nn.ModuleList([_tail(config.n_feats, s) for s in config.scales])

    def forward(self, x: torch.Tensor, head: int = 0) -> torch.Tensor:
        size = self.config.patch_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2:] != (size, size):
            raise ValueError(
                f"IPT only accepts (N, 3, {size}, {size}) inputs, got {tuple(x.shape)}; "
                f"cut larger images into {size} x {size} tiles first"
            )
        if not 0 <= head < len(self.head):
            raise ValueError(f"IPT head index {head} out of range: this model has {len(self.head)} heads")
        x = self.head[head](self.sub_mean(x))
        x = x + self.body(x, head)
        # The tail and the mean shift write the output in 0..255: under bf16 autocast (8 significant
        # bits) these last steps alone would cost a 16-bit output about 7 bits. They run in fp32.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.add_mean(self.tail[head](x.float()))
