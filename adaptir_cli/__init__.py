"""adaptir: restore images with a frozen transformer base and hot-swappable AdaptIR adapters."""

__version__ = "0.1.0"
