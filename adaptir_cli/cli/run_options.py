"""Options `restore` and `bench` share."""

from __future__ import annotations

MAX_MEGAPIXELS_HELP = (
    "Refuse inputs whose header declares more megapixels than this, before decoding them "
    "(damaged or hostile files declare sizes their data cannot fill); 0: no limit."
)


def size_limit(max_megapixels: float) -> float | None:
    """The value read_image takes: None for no limit (the option's 0)."""
    return max_megapixels or None
