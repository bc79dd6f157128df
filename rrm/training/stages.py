"""Step 2 of two-step RRM (``python -m rrm.train --stage fcn --pseudo-labels P``): a DeepLab
network trained with plain cross-entropy on the one-step model's pseudo masks.

The loop, logging, checkpoints, resume and DDP are those of :mod:`rrm.train`; this module
holds what the stage does differently: its network and its step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rrm.training.config import TrainConfig
from rrm.training.losses import masked_cross_entropy
from rrm.models import DeepLabV2, build_deeplab, load_state_dict_file
from rrm.evaluation.prediction import check_state_dict_fits


def build_fcn_network(config: TrainConfig) -> DeepLabV2:
    """DeepLab-v2 with ``config.backbone`` (small or resnet101). ``config.weights``, if set,
    is a step-2 checkpoint (loaded whole) or ImageNet backbone weights in torchvision's
    ResNet layout (loaded into the backbone; its ``fc`` classifier is dropped)."""
    network = build_deeplab(config.backbone)
    if config.weights:
        state = load_state_dict_file(config.weights)
        whole = any(key.startswith("classifier.") for key in state)
        target = network if whole else network.backbone
        if not whole:
            state = {key: value for key, value in state.items() if not key.startswith("fc.")}
        check_state_dict_fits(target.state_dict(), state, f"weights {config.weights} do not fit DeepLab/"
                              f"{config.backbone}{' (whole network)' if whole else ' backbone'}")
        target.load_state_dict(state)
    return network


def fcn_training_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict,
                      device: torch.device) -> dict[str, torch.Tensor]:
    """One step of cross-entropy on the pseudo masks; returns ``{"ce", "total"}`` detached.

    ``batch["image"]`` float32 ``[B, 3, H, W]``, ``batch["mask"]`` int64 ``[B, H, W]`` (255:
    ignored, as are padding pixels). The logits (output stride 8) are upsampled bilinearly
    to ``H, W`` before the loss, as in the one-step stage. The loss is the mean over the
    labelled pixels, and 0 (with gradients of 0) when a batch has none.
    """
    images = batch["image"].to(device, non_blocking=True)
    target = batch["mask"].to(device, non_blocking=True)
    logits = F.interpolate(model(images)["seg_logits"], size=images.shape[-2:], mode="bilinear",
                           align_corners=False)
    loss = masked_cross_entropy(logits, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    loss = loss.detach()
    return {"ce": loss, "total": loss}
