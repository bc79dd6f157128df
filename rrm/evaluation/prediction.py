"""Predicting masks with a segmentation network: test-time-augmented probabilities, RRM's
inference dense CRF and the labelling of the result."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import rrm_ops
from rrm.data import IGNORE_INDEX
from rrm.utils.cli import positive_int_arg, scales_arg
from rrm.utils.devices import DEVICE_CHOICES

# Pseudo labels give every pixel a class by default: the CRF already settles the object
# boundaries where the network is unsure; a threshold trades coverage for precision.
DEFAULT_IGNORE_BELOW = 0.0


@dataclass(frozen=True)
class PredictionOptions:
    """Test-time augmentation and refinement (see :func:`predict_batch`), and the labelling:
    pixels whose top probability is below ``ignore_below`` get 255 (ignore) in the mask."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crf: bool = False
    ignore_below: float = 0.0


def add_prediction_arguments(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """``--scales``, ``--flip``, ``--crf``, ``--batch-size`` (default ``batch_size``) and
    ``--device``: the command-line options of :class:`PredictionOptions` and where predictions run."""
    parser.add_argument("--scales", type=scales_arg, default=(1.0,), help="comma-separated test scales (default: 1)")
    parser.add_argument("--flip", action="store_true", help="also average over mirrored images")
    parser.add_argument("--crf", action="store_true", help="refine with RRM's inference dense CRF")
    parser.add_argument("--batch-size", type=positive_int_arg, default=batch_size,
                        help=f"images of one size per batch (default: {batch_size})")
    parser.add_argument("--device", default="auto", help=f"{DEVICE_CHOICES} (default: auto)")


@torch.inference_mode()
def segmentation_probabilities(
    network: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False
) -> torch.Tensor:
    """Test-time-augmented class probabilities of the segmentation branch.

    For each scale ``s`` the images ``[B, 3, H, W]`` (ImageNet-normalised) are resized
    bilinearly to ``(int(H s), int(W s))``, and with ``flip`` also mirrored left-right; the
    logits are resized bilinearly to ``H, W`` (as RRM does, before the softmax), turned into
    probabilities by softmax, mirrored back, and all ``len(scales) * (1 + flip)`` maps are
    averaged. Returns float32 ``[B, L, H, W]`` on the images' device, summing to 1 over L.
    """
    height, width = images.shape[-2:]
    batch = images.shape[0]
    total = None
    for scale in scales:
        scaled = images
        if scale != 1.0:
            size = (max(1, int(height * scale)), max(1, int(width * scale)))
            scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        if flip:  # one forward pass over the originals and their mirror images
            scaled = torch.cat([scaled, scaled.flip(-1)])
        logits = network(scaled)["seg_logits"]
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        probabilities = logits.float().softmax(dim=1)
        if flip:
            probabilities = probabilities[:batch] + probabilities[batch:].flip(-1)
        total = probabilities if total is None else total + probabilities
    return total / (len(scales) * (2 if flip else 1))


def refine_with_crf(probabilities: torch.Tensor, images_uint8: torch.Tensor) -> torch.Tensor:
    """RRM's inference-time dense CRF (:data:`rrm_ops.INFERENCE_CRF`) on probabilities
    float32 ``[B, L, H, W]`` and images uint8 ``[B, 3, H, W]``; returns the mean-field
    marginals float32 ``[B, L, H, W]``."""
    return rrm_ops.dense_crf(probabilities, images_uint8, **rrm_ops.INFERENCE_CRF.as_kwargs())


def predict_batch(network: nn.Module, images: torch.Tensor, images_uint8: torch.Tensor,
                  options: PredictionOptions) -> torch.Tensor:
    """Class probabilities float32 ``[B, L, H, W]`` of normalised images float32
    ``[B, 3, H, W]`` (``images_uint8``: the same pixels, uint8, used by the CRF)."""
    probabilities = segmentation_probabilities(network, images, options.scales, options.flip)
    if options.crf:
        probabilities = refine_with_crf(probabilities, images_uint8)
    return probabilities


def labels_of(probabilities: torch.Tensor, ignore_below: float = 0.0) -> torch.Tensor:
    """uint8 ``[B, H, W]`` masks of probabilities ``[B, L, H, W]``: the argmax, and
    :data:`~rrm.data.IGNORE_INDEX` where the top probability is below ``ignore_below``."""
    top, labels = probabilities.max(dim=1)
    return labels.to(torch.uint8).masked_fill(top < ignore_below, IGNORE_INDEX)
