"""The training stages: one-step RRM (stage ``rrm``) and step 2 of two-step RRM (stage
``fcn``: a DeepLab trained with cross-entropy on the one-step model's pseudo masks).

A stage is what differs between them: its network and initial weights, its optimisation
step, its validation, the masks it trains on, the options it needs and its defaults. The
loop, logging, checkpoints, resume and DDP are shared (:mod:`rrm.training.loop`). A stage
object lives for one run and keeps the state its step accumulates (the label quality of the
one-step stage).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

import rrm_ops
from rrm.cams import cam_argmax_labels, mine_reliable_labels, upsampled_cams
from rrm.data import VOCSegmentation
from rrm.evaluation.metrics import LabelQuality
from rrm.evaluation.validation import validate_one_step, validate_segmentation
from rrm.models import build_deeplab, build_rrm, check_state_dict_fits, load_state_dict_file
from rrm.training.config import TrainConfig
from rrm.training.losses import masked_cross_entropy, reliable_region_cross_entropy
from rrm.utils.distributed import Context
from rrm.utils.errors import CheckpointError, ConfigError

Losses = dict[str, torch.Tensor]


class Stage(ABC):
    """One training stage, built for the run of ``config``."""

    name: ClassVar[str]
    # Options whose default differs in this stage from the TrainConfig default.
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    @classmethod
    def check(cls, config: TrainConfig) -> None:
        """Raise :class:`ConfigError` for options this stage cannot run with."""

    @abstractmethod
    def build_network(self) -> nn.Module:
        """The stage's network with its initial weights (``config.weights`` if set)."""

    @classmethod
    def training_masks(cls, config: TrainConfig) -> str | None:
        """A folder of masks to train on instead of the dataset's own (None: the dataset's)."""
        return None

    @abstractmethod
    def training_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict, step: int,
                      device: torch.device) -> Losses:
        """One optimisation step (``step`` counts the steps done before it); returns the
        loss parts, detached, on the device, with their sum under ``"total"``."""

    @abstractmethod
    def validate(self, network: nn.Module, val_set: VOCSegmentation, ctx: Context, panel: Path,
                 step: int) -> dict[str, float]:
        """Validation metrics after ``step`` steps (all processes call it; rank 0 draws ``panel``)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What the stage accumulated over the steps so far, summed over the processes, for
        the checkpoint (all processes call it)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor], ctx: Context) -> None:
        """Take back what :meth:`state_dict` returned (all processes call it)."""


class RRMStage(Stage):
    """One-step RRM. Each step: multi-scale CAMs -> reliable region labels (two dense CRFs
    and pruning, batched, on the device) -> multilabel soft-margin + reliable-region
    cross-entropy + dense energy loss. The first ``cls_only_steps`` train the
    classification branch alone. Validation: CAM-argmax and segmentation-branch mIoU, and
    the precision/coverage of the reliable labels on the training masks so far."""

    name = "rrm"

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.energy_loss = rrm_ops.DenseEnergyLoss(
            weight=config.energy_weight,
            sigma_rgb=config.energy_sigma_rgb,
            sigma_xy=config.energy_sigma_xy,
            scale_factor=config.energy_scale,
        )
        self.quality = {"reliable": LabelQuality(), "cam": LabelQuality()}

    def build_network(self) -> nn.Module:
        network = build_rrm(self.config.backbone)
        network.dropout7.p = self.config.cls_dropout
        if self.config.weights:
            network.load_pretrained(load_state_dict_file(self.config.weights, stage=self.name))
        return network

    def training_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict, step: int,
                      device: torch.device) -> Losses:
        config = self.config
        images = batch["image"].to(device, non_blocking=True)
        images_uint8 = batch["image_uint8"].to(device, non_blocking=True)
        rois = batch["roi"].to(device, non_blocking=True)
        cls_labels = batch["label"].to(device, non_blocking=True)
        cls_only = step < config.cls_only_steps
        # The extra CAM scales only feed the mining, which the classification-only phase skips.
        out = model(images, cam_scales=None if cls_only else config.cam_scales)
        losses = {"cls": F.multilabel_soft_margin_loss(out["cls_logits"], cls_labels)}
        seg_logits = F.interpolate(out["seg_logits"], size=images.shape[-2:], mode="bilinear", align_corners=False)
        if cls_only:
            # Keeps every parameter in the graph, as DistributedDataParallel requires.
            total = losses["cls"] + 0.0 * seg_logits.sum()
        else:
            reliable = mine_reliable_labels(out["cams"], cls_labels, images_uint8, rois, **config.mining_kwargs())
            losses["seg_bg"], losses["seg_fg"] = reliable_region_cross_entropy(seg_logits, reliable)
            probs = torch.softmax(seg_logits, dim=1)
            losses["dense"] = self.energy_loss(images_uint8.float(), probs, rois, reliable.unsqueeze(1))
            total = sum(losses.values())
            self._measure_label_quality(batch, out["cams"], cls_labels, reliable, rois)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        losses["total"] = total
        return {name: value.detach() for name, value in losses.items()}

    def _measure_label_quality(self, batch: dict, cams: torch.Tensor, cls_labels: torch.Tensor,
                               reliable: torch.Tensor, rois: torch.Tensor) -> None:
        """Precision/coverage of the reliable labels and of the CAM argmax on the train masks."""
        target = batch["mask"].to(reliable.device, non_blocking=True)
        target = target.masked_fill(rois == 0, 255)
        with torch.no_grad():
            cam_labels = cam_argmax_labels(upsampled_cams(cams.detach(), tuple(target.shape[-2:])), cls_labels,
                                           self.config.cam_bg_threshold)
        self.quality["reliable"].update(reliable, target)
        self.quality["cam"].update(cam_labels, target)

    def validate(self, network: nn.Module, val_set: VOCSegmentation, ctx: Context, panel: Path,
                 step: int) -> dict[str, float]:
        metrics = validate_one_step(network, val_set, self.config, ctx, panel,
                                    segmentation_trained=step > self.config.cls_only_steps)
        reliable, cam = self.quality["reliable"].reduced(), self.quality["cam"].reduced()
        return {
            **metrics,
            "reliable_precision": reliable["precision"],
            "reliable_coverage": reliable["coverage"],
            "cam_train_precision": cam["precision"],
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The label-quality counts of every process, summed (the final metrics read them)."""
        return {f"quality/{name}": quality.reduced_counts() for name, quality in self.quality.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], ctx: Context) -> None:
        """Rank 0 takes the summed counts and the others start from zero, so that the next
        sum over the processes counts every step once."""
        for name, quality in self.quality.items():
            counts = state.get(f"quality/{name}")
            if counts is None or counts.shape != quality.counts.shape:
                raise CheckpointError(f"the checkpoint's stage state has no label-quality counts {name!r} of shape "
                                      f"{tuple(quality.counts.shape)}")
            quality.counts = (counts if ctx.is_main else torch.zeros_like(counts)).to(ctx.device, torch.float64)


class FCNStage(Stage):
    """Step 2 (``--stage fcn --pseudo-labels P``): DeepLab with plain cross-entropy on the
    pseudo masks in P. Validation: segmentation mIoU."""

    name = "fcn"
    # Step 2 fits fixed pseudo masks with plain cross-entropy, which needs no
    # classification-only phase, and its budget is a few minutes on 2 CPU cores so that the
    # whole two-step run stays near 20 minutes.
    defaults = {"max_steps": 1000, "cls_only_steps": 0, "val_every": 500}

    @classmethod
    def check(cls, config: TrainConfig) -> None:
        if not config.pseudo_labels:
            raise ConfigError("stage fcn trains on pseudo labels: pass --pseudo-labels FOLDER "
                              "(written by python -m rrm.pseudo_labels)")

    def build_network(self) -> nn.Module:
        """DeepLab-v2 with ``config.backbone`` (small or resnet101). ``config.weights``, if
        set, is a step-2 checkpoint (loaded whole) or ImageNet backbone weights in
        torchvision's ResNet layout (loaded into the backbone; its ``fc`` classifier is
        dropped)."""
        config = self.config
        network = build_deeplab(config.backbone)
        if config.weights:
            state = load_state_dict_file(config.weights, stage=self.name)
            whole = any(key.startswith("classifier.") for key in state)
            target = network if whole else network.backbone
            if not whole:
                state = {key: value for key, value in state.items() if not key.startswith("fc.")}
            check_state_dict_fits(target.state_dict(), state, f"weights {config.weights} do not fit DeepLab/"
                                  f"{config.backbone}{' (whole network)' if whole else ' backbone'}")
            target.load_state_dict(state)
        return network

    @classmethod
    def training_masks(cls, config: TrainConfig) -> str | None:
        return config.pseudo_labels

    def training_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict, step: int,
                      device: torch.device) -> Losses:
        """Cross-entropy on the pseudo masks: ``batch["mask"]`` int64 ``[B, H, W]`` (255 and
        padding ignored); the logits (output stride 8) are upsampled bilinearly to the image
        before the loss, as in the one-step stage. The loss is the mean over the labelled
        pixels, and 0 (with gradients of 0) when a batch has none."""
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

    def validate(self, network: nn.Module, val_set: VOCSegmentation, ctx: Context, panel: Path,
                 step: int) -> dict[str, float]:
        return validate_segmentation(network, val_set, ctx, panel, self.config.panel_images)


STAGES: dict[str, type[Stage]] = {stage.name: stage for stage in (RRMStage, FCNStage)}


def stage_class(name: str) -> type[Stage]:
    """The stage called ``name``; :class:`ConfigError` for an unknown name."""
    if name not in STAGES:
        choices = " or ".join(repr(known) for known in STAGES)
        raise ConfigError(f"stage must be {choices}, got {name!r}")
    return STAGES[name]
