"""Reliable region mining: CAMs -> two dense CRFs on one lattice pair -> pruned labels.

The method is described in docs/design.md#reliable-region-mining.

The work is the registered op ``torch.ops.rrm_ops.reliable_region_labels`` (a C++ composite with
CPU and CUDA kernels); :func:`reliable_region_labels` is its typed Python face.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import Tensor

from rrm_ops._library import ops, runs_on_host
from rrm_ops.crf import TRAINING_CRF, CrfParams


class MiningDetails(NamedTuple):
    """labels int64 [B, H, W]; q_low, q_high float32 [B, C+1, H, W]; sure bool [B, H, W]."""

    labels: Tensor
    q_low: Tensor
    q_high: Tensor
    sure: Tensor


def _check_types(cams: object, cls_labels: object, images: object) -> None:
    for name, value in (("cams", cams), ("cls_labels", cls_labels), ("images", images)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not cams.is_floating_point():
        raise TypeError(f"cams must be a floating tensor, got dtype {cams.dtype}")
    if images.dtype != torch.uint8:
        raise TypeError(f"images must have dtype uint8, got {images.dtype}")


def _check_inputs(cams: Tensor, cls_labels: Tensor, images: Tensor) -> None:
    _check_types(cams, cls_labels, images)
    if cams.dim() != 4:
        raise ValueError(f"cams must be a float [B, C, H, W] tensor, got shape {tuple(cams.shape)}")
    batch, classes, height, width = cams.shape
    if classes < 1:
        raise ValueError("cams must have at least one class channel")
    if tuple(cls_labels.shape) != (batch, classes):
        raise ValueError(f"cls_labels must be [B, C] = [{batch}, {classes}], got {tuple(cls_labels.shape)}")
    if images.dim() != 4:
        raise ValueError(f"images must be uint8 [B, 3, H, W] or [B, H, W, 3], got shape {tuple(images.shape)}")
    spatial = tuple(images.shape[2:]) if images.shape[1] == 3 else tuple(images.shape[1:3])
    if images.shape[0] != batch or spatial != (height, width):
        raise ValueError(f"images must have B, H, W = {batch}, {height}, {width} of cams, got {tuple(images.shape)}")
    # Value checks read data on the host, so only CPU tensors get them (no GPU round trip).
    if runs_on_host(cams.device) and cams.numel():
        minimum, maximum = torch.aminmax(cams)  # one pass; NaN propagates to both
        if not (torch.isfinite(minimum) and torch.isfinite(maximum)) or minimum < 0:
            raise ValueError("cams must be finite and >= 0")
    if runs_on_host(cls_labels.device) and ((cls_labels != 0) & (cls_labels != 1)).any():
        raise ValueError("cls_labels must hold only 0 and 1")


def reliable_region_labels(
    cams: Tensor,
    cls_labels: Tensor,
    images: Tensor,
    *,
    alpha_low: float = 4.0,
    alpha_high: float = 32.0,
    crf: CrfParams = TRAINING_CRF,
    cam_alpha: float = 32.0,
    fg_quantile: float = 0.6,
    cam_floor: float = 0.1,
    bg_sure: float = 0.8,
    crf_sure: float = 0.8,
    ignore_index: int = 255,
    return_details: bool = False,
    compact_labels: bool | None = None,
) -> Tensor | MiningDetails:
    """RRM's reliable region labels of a batch, on the batch's device.

    Args:
        cams: float [B, C, H, W] >= 0 at image size, not yet normalised.
        cls_labels: [B, C] image-level labels in {0, 1}, on the CPU or on the device of cams.
        images: uint8 [B, 3, H, W] or [B, H, W, 3].
        alpha_low, alpha_high: background powers of the two CRFs; cam_alpha: of the CAM argmax.
        crf: the parameters both CRFs run with; RRM's training CRF by default.
        fg_quantile, cam_floor, bg_sure, crf_sure: pruning thresholds (docs/design.md#reliable-region-mining).
        return_details: also return Q_low, Q_high and the sure-CAM mask.
        compact_labels: deprecated and ignored (a FutureWarning when given): the CRFs always run
            on each image's present labels only, padded to the batch's largest present count,
            on every device and with no host read of their own.

    Returns:
        int64 [B, H, W] in {0..C, ignore_index} (class c is label c+1), or MiningDetails.
        An image with no present class is treated as background only: its CRFs see the
        background label alone, so every pixel whose background CAM score is sure becomes 0.
        Absent classes have Q = 0 (the CRFs run on the present labels only).
    """
    if compact_labels is not None:
        warnings.warn(
            "reliable_region_labels: compact_labels is deprecated and has no effect (the CRFs always run on each "
            "image's present labels only); it will be removed",
            FutureWarning,
            stacklevel=2,
        )
    _check_inputs(cams, cls_labels, images)
    if not isinstance(crf, CrfParams):
        raise TypeError(f"crf must be a CrfParams (e.g. rrm_ops.TRAINING_CRF), got {type(crf).__name__}")
    labels, sure, q = ops().reliable_region_labels(
        cams.detach(), cls_labels.detach(), images.detach(), float(alpha_low), float(alpha_high),
        *crf.as_op_arguments(), float(cam_alpha), float(fg_quantile), float(cam_floor), float(bg_sure),
        float(crf_sure), int(ignore_index), bool(return_details))
    return MiningDetails(labels, q[0], q[1], sure) if return_details else labels
