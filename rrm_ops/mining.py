"""Reliable region mining: CAMs -> two dense CRFs on one lattice pair -> pruned labels (DESIGN.md §5.4)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from rrm_ops.crf import crf_lattices, mean_field, unary_from_scores

# RRM's training-time CRF parameters (DESIGN.md §5.2).
TRAIN_CRF = dict(n_iter=10, gaussian_sxy=3.0, gaussian_compat=3.0, bilateral_sxy=80.0, bilateral_srgb=13.0,
                 bilateral_compat=10.0)


class MiningDetails(NamedTuple):
    """labels int64 [B, H, W]; q_low, q_high float32 [B, C+1, H, W]; sure bool [B, H, W]."""

    labels: Tensor
    q_low: Tensor
    q_high: Tensor
    sure: Tensor


def _check_inputs(cams: Tensor, cls_labels: Tensor, images: Tensor) -> None:
    if not isinstance(cams, Tensor) or cams.dim() != 4 or not cams.is_floating_point():
        raise ValueError(f"cams must be a float [B, C, H, W] tensor, got {getattr(cams, 'shape', type(cams))}")
    batch, classes, height, width = cams.shape
    if classes < 1:
        raise ValueError("cams must have at least one class channel")
    if not isinstance(cls_labels, Tensor) or tuple(cls_labels.shape) != (batch, classes):
        raise ValueError(f"cls_labels must be [B, C] = [{batch}, {classes}], got {getattr(cls_labels, 'shape', None)}")
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError("images must be uint8 [B, 3, H, W] or [B, H, W, 3]")
    spatial = tuple(images.shape[2:]) if images.shape[1] == 3 else tuple(images.shape[1:3])
    if images.shape[0] != batch or spatial != (height, width):
        raise ValueError(f"images must have B, H, W = {batch}, {height}, {width} of cams, got {tuple(images.shape)}")
    if cams.device.type == "cpu" and cams.numel():
        if not torch.isfinite(cams).all() or (cams < 0).any():
            raise ValueError("cams must be finite and >= 0")
        if ((cls_labels != 0) & (cls_labels != 1)).any():
            raise ValueError("cls_labels must hold only 0 and 1")


def reliable_region_labels(
    cams: Tensor,
    cls_labels: Tensor,
    images: Tensor,
    *,
    alpha_low: float = 4.0,
    alpha_high: float = 32.0,
    cam_alpha: float = 32.0,
    fg_quantile: float = 0.6,
    cam_floor: float = 0.1,
    bg_sure: float = 0.8,
    crf_sure: float = 0.8,
    ignore_index: int = 255,
    return_details: bool = False,
) -> Tensor | MiningDetails:
    """RRM's reliable region labels of a batch, on the batch's device.

    Args:
        cams: float [B, C, H, W] >= 0 at image size, not yet normalised.
        cls_labels: [B, C] image-level labels in {0, 1}.
        images: uint8 [B, 3, H, W] or [B, H, W, 3].
        alpha_low, alpha_high: background powers of the two CRFs; cam_alpha: of the CAM argmax.
        fg_quantile, cam_floor, bg_sure, crf_sure: pruning thresholds (DESIGN.md §5.4).
        return_details: also return Q_low, Q_high and the sure-CAM mask.

    Returns:
        int64 [B, H, W] in {0..C, ignore_index} (class c is label c+1), or MiningDetails.
        An image with no present class is treated as background only: its CRFs see the
        background label alone, so every pixel whose background CAM score is sure becomes 0.
        Absent classes have Q = 0 (the CRFs run on the present labels only).
    """
    _check_inputs(cams, cls_labels, images)
    batch, classes, height, width = cams.shape
    present = cls_labels.to(device=cams.device, dtype=torch.bool)
    normalised = cams.float() * present[:, :, None, None]
    normalised = normalised / (normalised.flatten(2).amax(dim=2)[:, :, None, None] + 1e-5)
    label_mask = torch.cat([torch.ones_like(present[:, :1]), present], dim=1)
    lattices = crf_lattices(images, gaussian_sxy=TRAIN_CRF["gaussian_sxy"],
                            bilateral_sxy=TRAIN_CRF["bilateral_sxy"], bilateral_srgb=TRAIN_CRF["bilateral_srgb"])
    max_cam = normalised.amax(dim=1, keepdim=True)

    def crf_with_background_power(alpha: float) -> Tensor:
        scores = torch.cat([(1 - max_cam).pow(alpha), normalised], dim=1)
        return mean_field(unary_from_scores(scores), lattices, n_iter=TRAIN_CRF["n_iter"],
                          gaussian_compat=TRAIN_CRF["gaussian_compat"],
                          bilateral_compat=TRAIN_CRF["bilateral_compat"], label_mask=label_mask)

    q_low, q_high = crf_with_background_power(alpha_low), crf_with_background_power(alpha_high)
    labels, sure = torch.ops.rrm_ops.prune_reliable_labels(
        normalised.reshape(batch, classes, -1), q_low.reshape(batch, classes + 1, -1),
        q_high.reshape(batch, classes + 1, -1), float(cam_alpha), float(fg_quantile), float(cam_floor),
        float(bg_sure), float(crf_sure), int(ignore_index))
    labels, sure = labels.reshape(batch, height, width), sure.reshape(batch, height, width)
    return MiningDetails(labels, q_low, q_high, sure) if return_details else labels
