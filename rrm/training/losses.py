"""RRM's joint loss: classification + reliable-region cross-entropy + dense energy loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rrm.data import IGNORE_INDEX


def masked_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy over the pixels whose target is not IGNORE_INDEX, 0 if there are none.

    ``F.cross_entropy``'s mean is 0/0 = NaN when every pixel is ignored, which happens for
    a batch whose reliable regions hold no background (or no object) pixel.

    Args:
        logits: float [B, K, H, W]. target: int64 [B, H, W] in 0..K-1 or IGNORE_INDEX.
    """
    total = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp(min=1)


def reliable_region_cross_entropy(seg_logits: Tensor, reliable: Tensor) -> tuple[Tensor, Tensor]:
    """RRM's two cross-entropy terms on the reliable labels: background pixels and object
    pixels, each averaged over its own pixels.

    Args:
        seg_logits: float [B, C+1, H, W] at label resolution.
        reliable: int64 [B, H, W] in 0..C or IGNORE_INDEX.

    Returns:
        (background loss, foreground loss), scalars.
    """
    ignore = torch.full_like(reliable, IGNORE_INDEX)
    background = torch.where(reliable == 0, reliable, ignore)
    foreground = torch.where(reliable == 0, ignore, reliable)
    return masked_cross_entropy(seg_logits, background), masked_cross_entropy(seg_logits, foreground)
