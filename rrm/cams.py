"""What class activation maps (CAMs) become: upsampled to the image, normalised, the
CAM-argmax baseline's labels and RRM's reliable region labels (two dense CRFs and pruning,
through ``rrm_ops``), all on the CAMs' device."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

import rrm_ops
from rrm.data import IGNORE_INDEX


def upsampled_cams(cams: Tensor, size: tuple[int, int]) -> Tensor:
    """CAMs [B, C, h, w] -> [B, C, H, W] (bilinear, align_corners=False), clamped to >= 0."""
    return F.interpolate(cams, size=size, mode="bilinear", align_corners=False).clamp_min(0)


def normalised_cams(cams: Tensor, cls_labels: Tensor) -> Tensor:
    """CAMs of absent classes zeroed, each map divided by its max: [B, C, H, W] in [0, 1]."""
    cams = cams * cls_labels[:, :, None, None].to(cams.dtype)
    peak = cams.flatten(2).amax(dim=2)[:, :, None, None]
    return cams / (peak + 1e-5)


def cam_argmax_labels(cams: Tensor, cls_labels: Tensor, bg_threshold: float) -> Tensor:
    """The CAM baseline's labels: argmax over [bg_threshold ; normalised CAMs], int64 [B, H, W]."""
    normalised = normalised_cams(cams, cls_labels)
    background = torch.full_like(normalised[:, :1], bg_threshold)
    return torch.cat([background, normalised], dim=1).argmax(dim=1)


def mine_reliable_labels(
    cams: Tensor, cls_labels: Tensor, images_uint8: Tensor, rois: Tensor, **mining: float
) -> Tensor:
    """Reliable labels of a batch: int64 [B, H, W] in 0..C, IGNORE_INDEX elsewhere and in padding.

    Args:
        cams: float [B, C, h, w] >= 0 at feature resolution (upsampled to the image here).
        cls_labels: [B, C] image-level labels in {0, 1}.
        images_uint8: uint8 [B, 3, H, W].
        rois: [B, H, W], 1 inside the valid crop.
        mining: keyword arguments of ``rrm_ops.reliable_region_labels``; its CRFs are RRM's
            training CRF (``rrm_ops.TRAINING_CRF``).
    """
    full = upsampled_cams(cams.detach().float(), tuple(images_uint8.shape[-2:]))
    labels = rrm_ops.reliable_region_labels(
        full, cls_labels, images_uint8, crf=rrm_ops.TRAINING_CRF, ignore_index=IGNORE_INDEX, **mining
    )
    return labels.masked_fill(rois == 0, IGNORE_INDEX)
