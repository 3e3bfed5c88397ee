"""Images between their numpy form (HWC float32 in [0, 1], as read and written) and the (1, 3, H, W)
tensors the models take: views both ways, no copies."""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HWC float32 [0, 1] -> (1, 3, H, W), a view: tiles are copied out of it anyway, and a second
    float copy of a 12 MP input would cost 144 MB."""
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def to_numpy(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) -> HWC float32, a view: a 16000 x 12000 output is not copied again."""
    return image[0].permute(1, 2, 0).numpy()
