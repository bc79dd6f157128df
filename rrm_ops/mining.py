"""Reliable region mining: CAMs -> two dense CRFs on one lattice pair -> pruned labels.

The method is described in docs/design.md#reliable-region-mining.

The work is the registered op ``torch.ops.rrm_ops.reliable_region_labels`` (a C++ composite with
CPU and CUDA kernels); :func:`reliable_region_labels` is its typed Python face.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

from torch import Tensor

from rrm_ops import _args
from rrm_ops._library import ops
from rrm_ops.crf import TRAINING_CRF, CrfParams


class MiningDetails(NamedTuple):
    """labels int64 [B, H, W]; q_low, q_high float32 [B, C+1, H, W]; sure bool [B, H, W]."""

    labels: Tensor
    q_low: Tensor
    q_high: Tensor
    sure: Tensor


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
        cams: float32/float64 [B, C, H, W], finite and >= 0 (as float32), at image size, not yet
            normalised; any memory layout.
        cls_labels: real or bool [B, C] image-level labels in {0, 1}, on the CPU or on the device
            of cams.
        images: uint8 [B, 3, H, W] or [B, H, W, 3].
        alpha_low, alpha_high: background powers of the two CRFs; cam_alpha: of the CAM argmax.
        crf: the parameters both CRFs run with; RRM's training CRF by default.
        fg_quantile, cam_floor, bg_sure, crf_sure: pruning thresholds (docs/design.md#reliable-region-mining).
        ignore_index: the label of unreliable pixels; not a label 0..C.
        return_details: also return Q_low, Q_high and the sure-CAM mask.
        compact_labels: deprecated and ignored (a FutureWarning when given): the CRFs always run
            on each image's present labels only, padded to the batch's largest present count,
            on every device and with no host read of their own.

    The op checks every argument (TypeError for a dtype, ValueError for a shape, device or
    value). The values of cams and cls_labels are checked on the host: always for CPU tensors;
    for CUDA tensors only where the op reads the host anyway (compacting with cls_labels on the
    GPU), never at the cost of a host synchronisation (docs/error-policy.md).

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
    if not isinstance(crf, CrfParams):
        raise TypeError(f"crf must be a CrfParams (e.g. rrm_ops.TRAINING_CRF), got {type(crf).__name__}")
    labels, sure, q = ops().reliable_region_labels(
        _args.tensor(cams, "cams"),
        _args.tensor(cls_labels, "cls_labels"),
        _args.tensor(images, "images"),
        _args.number(alpha_low, "alpha_low"),
        _args.number(alpha_high, "alpha_high"),
        *crf.as_op_arguments(),
        _args.number(cam_alpha, "cam_alpha"),
        _args.number(fg_quantile, "fg_quantile"),
        _args.number(cam_floor, "cam_floor"),
        _args.number(bg_sure, "bg_sure"),
        _args.number(crf_sure, "crf_sure"),
        _args.integer(ignore_index, "ignore_index"),
        bool(return_details),
    )
    return MiningDetails(labels, q[0], q[1], sure) if return_details else labels
