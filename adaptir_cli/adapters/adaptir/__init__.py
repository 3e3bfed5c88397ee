"""AdaptIR (arXiv 2312.08881): a mixture of local, frequency and channel experts beside each MLP."""

from adaptir_cli.adapters.adaptir.config import AdaptIRConfig
from adaptir_cli.adapters.adaptir.layer import AdaptIR, ChannelScore, FrequencyBranch, LowRankDepthwise

__all__ = ["AdaptIR", "AdaptIRConfig", "ChannelScore", "FrequencyBranch", "LowRankDepthwise"]
