"""The AdaptIR module: a heterogeneous mixture of a local, a frequency and a channel expert.

It maps a feature map (N, d, H, W) to a correction of the same shape, added to the output of
the frozen MLP it runs beside. Its last projection starts at zero, so a fresh adapter leaves
the base's function unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import init

from adaptir_cli.adapters.adaptir.config import AdaptIRConfig
from adaptir_cli.adapters.fields import reduced
from adaptir_cli.bases.layers import ChannelLayerNorm

_KERNEL = 3


class LowRankDepthwise(nn.Module):
    """Local branch (LIM): a 3x3 depthwise conv whose (h, 9) kernel is the product A (h x r) @ B (r x 9).

    The low-rank factorisation is what keeps the spatial expert within the parameter budget.
    """

    def __init__(self, channels: int, rank: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.empty(channels, rank))
        self.b = nn.Parameter(torch.empty(rank, _KERNEL * _KERNEL))
        self.bias = nn.Parameter(torch.empty(channels))
        init.kaiming_uniform_(self.a, a=math.sqrt(5))
        init.kaiming_uniform_(self.b, a=math.sqrt(5))
        # Same range as a depthwise nn.Conv2d's default bias (fan-in of one 3x3 kernel).
        bound = 1.0 / _KERNEL
        init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = (self.a @ self.b).reshape(-1, 1, _KERNEL, _KERNEL)
        return F.conv2d(x, kernel, self.bias, padding=_KERNEL // 2, groups=x.shape[1])


class FrequencyBranch(nn.Module):
    """Global branch (FAM): per-channel affine maps of the amplitude and phase of the 2-D spectrum.

    Always computed in float32: FFTs do not exist for bf16/fp16, so autocast is switched off here
    and the input and the affine weights are promoted. The output is float32.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.amplitude = nn.Conv2d(channels, channels, 1, groups=channels)
        self.phase = nn.Conv2d(channels, channels, 1, groups=channels)
        for conv in (self.amplitude, self.phase):  # start as the identity on the spectrum
            init.ones_(conv.weight)
            init.zeros_(conv.bias)

    @staticmethod
    def _affine(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, conv.weight.float(), conv.bias.float(), groups=x.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        with torch.autocast(x.device.type, enabled=False):
            spectrum = torch.fft.rfft2(x.float(), norm="ortho")
            amplitude = self._affine(self.amplitude, spectrum.abs())
            phase = self._affine(self.phase, spectrum.angle())
            # Not torch.polar: a learned amplitude may turn negative, where polar is undefined.
            rebuilt = torch.complex(amplitude * torch.cos(phase), amplitude * torch.sin(phase))
            return torch.fft.irfft2(rebuilt, s=(height, width), norm="ortho").abs()


class ChannelScore(nn.Module):
    """Channel branch (CGM): attention-pooled descriptor -> MLP -> one score per channel, (N, h, 1, 1).

    No sigmoid: the score scales the mixed features freely, as in the paper.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention = nn.Conv2d(channels, 1, 1)
        middle = reduced(channels, 2)
        self.mlp = nn.Sequential(nn.Linear(channels, middle), nn.GELU(), nn.Linear(middle, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.attention(x).flatten(2).softmax(dim=-1)  # (N, 1, H*W), over all positions
        pooled = (x.flatten(2) * weights).sum(dim=-1)  # (N, h)
        return self.mlp(pooled)[:, :, None, None]


class AdaptIR(nn.Module):
    """One AdaptIR adapter for an MLP of width `dim` (METHOD.md section 3).

    The config's ablation switches drop a branch (its modules are not built, so the parameter
    count shrinks as in the paper's ablation table) or replace the gated ensemble by a plain sum.
    """

    def __init__(self, dim: int, config: AdaptIRConfig | None = None) -> None:
        super().__init__()
        config = config or AdaptIRConfig()
        hidden = config.hidden_width(dim)
        # BatchNorm carries running statistics: an adapter's state includes its buffers.
        norm = nn.BatchNorm2d(hidden) if config.batch_norm else ChannelLayerNorm(hidden)
        self.down = nn.Sequential(nn.Conv2d(dim, hidden, 1), norm)
        self.local = LowRankDepthwise(hidden, config.rank_for(hidden)) if config.local else None
        self.frequency = FrequencyBranch(hidden) if config.frequency else None
        self.channel_score = ChannelScore(hidden) if config.channel else None
        self.channel_gate = self.spatial_gate = None
        # The gates cross the branches, so they exist only when both branches do.
        if config.ensemble and config.local and config.frequency:
            gate_width = reduced(hidden, 8)
            self.channel_gate = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Conv2d(hidden, gate_width, 1), nn.GELU(),
                nn.Conv2d(gate_width, hidden, 1), nn.Sigmoid(),
            )
            self.spatial_gate = nn.Sequential(nn.Conv2d(hidden, 1, 1), nn.Sigmoid())
            # Zero gates start both mixtures at 0.5.
            for conv in (self.channel_gate[3], self.spatial_gate[0]):
                init.zeros_(conv.weight)
                init.zeros_(conv.bias)
        self.up = nn.Conv2d(hidden, dim, 1, bias=False)
        # The zero up-projection makes the adapter output exactly 0, so the adapted base equals
        # the pre-trained one at initialisation.
        init.zeros_(self.up.weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.down(features)
        local = self.local(x) if self.local is not None else None
        global_ = self.frequency(x) if self.frequency is not None else None
        if local is not None and global_ is not None:
            global_ = global_.to(local.dtype)  # back to the autocast dtype of the other branch
        if local is None or global_ is None:
            mix = local if global_ is None else global_
        elif self.channel_gate is None:
            mix = local + global_
        else:
            # Each expert is gated by the other's summary: the global branch's channel statistics
            # weigh the local features, the local branch's spatial map weighs the global ones.
            mix = self.channel_gate(global_) * local + self.spatial_gate(local) * global_
        if self.channel_score is not None:
            mix = self.channel_score(x) * mix
        return self.up(mix)
