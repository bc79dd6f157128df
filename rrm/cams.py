"""CAMs of a batch -> reliable region labels, on the batch's device (DESIGN.md §5.4)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

import rrm_ops
from rrm.data import IGNORE_INDEX


def upsampled_cams(cams: Tensor, size: tuple[int, int]) -> Tensor:
    """CAMs [B, C, h, w] -> [B, C, H, W] (bilinear, align_corners=False), clamped to >= 0."""
    return F.interpolate(cams, size=size, mode="bilinear", align_corners=False).clamp_min(0)


def mine_reliable_labels(
    cams: Tensor, cls_labels: Tensor, images_uint8: Tensor, rois: Tensor, **mining: float
) -> Tensor:
    """Reliable labels of a batch: int64 [B, H, W] in 0..C, IGNORE_INDEX elsewhere and in padding.

    Args:
        cams: float [B, C, h, w] >= 0 at feature resolution (upsampled to the image here).
        cls_labels: [B, C] image-level labels in {0, 1}.
        images_uint8: uint8 [B, 3, H, W].
        rois: [B, H, W], 1 inside the valid crop.
        mining: keyword arguments of ``rrm_ops.reliable_region_labels``.
    """
    full = upsampled_cams(cams.detach().float(), tuple(images_uint8.shape[-2:]))
    labels = rrm_ops.reliable_region_labels(full, cls_labels, images_uint8, ignore_index=IGNORE_INDEX, **mining)
    return labels.masked_fill(rois == 0, IGNORE_INDEX)
