"""Validation: of an RRM network (CAM-argmax baseline, segmentation branch) and of a
step-2 segmentation network (DeepLab), with panels; and of either under RRM's inference
protocol (multi-scale, flip, dense CRF)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rrm.data import IGNORE_INDEX
from rrm.utils.distributed import Context, all_reduce_sum
from rrm.evaluation.metrics import ConfusionMatrix
from rrm.cams import mine_reliable_labels, upsampled_cams
from rrm.evaluation.panels import SEGMENTATION_COLUMNS, colourise, draw_panel, heatmap
from rrm.evaluation.prediction import refine_with_crf, segmentation_probabilities


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


@dataclass
class LabelQuality:
    """Agreement of pseudo labels with ground-truth masks, accumulated on the device.

    precision: correct / kept pixels (kept = not ignored); coverage: kept / valid pixels.
    """

    counts: Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))

    def update(self, labels: Tensor, target: Tensor) -> None:
        valid = target != IGNORE_INDEX
        kept = valid & (labels != IGNORE_INDEX)
        correct = kept & (labels == target)
        batch = torch.stack([correct.sum(), kept.sum(), valid.sum()]).to(torch.float64)
        self.counts = self.counts.to(batch.device) + batch

    def reduced(self) -> dict[str, float]:
        correct, kept, valid = all_reduce_sum(self.counts).tolist()
        return {
            "precision": correct / kept if kept else float("nan"),
            "coverage": kept / valid if valid else float("nan"),
        }


def samples_of_rank(dataset, ctx: Context) -> Iterator[tuple[dict, Tensor, Tensor]]:
    """This process's share of ``dataset`` (samples ``rank::world_size``): each sample with
    its image float32 ``[1, 3, H, W]`` and mask int64 ``[1, H, W]`` on the device."""
    for index in range(ctx.rank, len(dataset), ctx.world_size):
        sample = dataset[index]
        yield sample, sample["image"][None].to(ctx.device), sample["mask"][None].to(ctx.device)


def segmentation_labels(seg_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Logits ``[B, L, h, w]`` resized bilinearly to ``size``, then argmax: int64 ``[B, *size]``."""
    return F.interpolate(seg_logits, size=size, mode="bilinear", align_corners=False).argmax(dim=1)


@torch.no_grad()
def validate(model, dataset, config, ctx: Context, panel_path: Path | None = None) -> dict[str, float]:
    """mIoU of the CAM baseline and of the segmentation branch on ``dataset`` (images are
    split over the processes; results are all-reduced). Rank 0 draws ``panel_path``."""
    was_training = model.training
    model.eval()
    num_labels = model.num_classes + 1
    cam_scores, seg_scores = ConfusionMatrix(num_labels), ConfusionMatrix(num_labels)
    panel_rows = []
    for sample, image, target in samples_of_rank(dataset, ctx):
        labels = sample["label"][None].to(ctx.device)
        out = model(image, cam_scales=config.cam_scales)
        cams = upsampled_cams(out["cams"], tuple(target.shape[-2:]))
        cam_pred = cam_argmax_labels(cams, labels, config.cam_bg_threshold)
        seg_pred = segmentation_labels(out["seg_logits"], tuple(target.shape[-2:]))
        cam_scores.update(cam_pred, target)
        seg_scores.update(seg_pred, target)
        if panel_path is not None and ctx.is_main and len(panel_rows) < config.panel_images:
            panel_rows.append(_panel_row(sample, out["cams"], labels, seg_pred, target, config))
    model.train(was_training)
    if panel_rows:
        draw_panel(panel_rows, panel_path)
    return {"cam_miou": cam_scores.compute().miou, "seg_miou": seg_scores.compute().miou}


@torch.no_grad()
def validate_segmentation(model, dataset, ctx: Context, panel_path: Path | None = None,
                          panel_images: int = 0) -> dict[str, float]:
    """``{"seg_miou": ...}`` of a segmentation network (``model(images)["seg_logits"]``,
    e.g. step 2's DeepLab) on ``dataset``, split over the processes and all-reduced. Rank 0
    draws ``panel_path``: image | prediction | ground truth for ``panel_images`` images."""
    was_training = model.training
    model.eval()
    scores = ConfusionMatrix(model.num_classes + 1)
    panel_rows = []
    for sample, image, target in samples_of_rank(dataset, ctx):
        prediction = segmentation_labels(model(image)["seg_logits"], tuple(target.shape[-2:]))
        scores.update(prediction, target)
        if panel_path is not None and ctx.is_main and len(panel_rows) < panel_images:
            panel_rows.append([sample["image_uint8"].permute(1, 2, 0).numpy(),
                               colourise(prediction[0].cpu().numpy()), colourise(target[0].cpu().numpy())])
    model.train(was_training)
    if panel_rows:
        draw_panel(panel_rows, panel_path, SEGMENTATION_COLUMNS)
    return {"seg_miou": scores.compute().miou}


@torch.no_grad()
def validate_with_crf(model, dataset, ctx: Context, scales: Sequence[float]) -> float:
    """mIoU of the segmentation branch under RRM's inference protocol: probabilities averaged
    over ``scales`` and their mirror images, refined by the inference dense CRF
    (:data:`rrm.evaluation.prediction.CRF_INFERENCE_PARAMS`). Images are split over the processes."""
    was_training = model.training
    model.eval()
    scores = ConfusionMatrix(model.num_classes + 1)
    for sample, image, target in samples_of_rank(dataset, ctx):
        probabilities = segmentation_probabilities(model, image, scales, flip=True)
        refined = refine_with_crf(probabilities, sample["image_uint8"][None].to(ctx.device))
        scores.update(refined.argmax(dim=1), target)
    model.train(was_training)
    return scores.compute().miou


def _panel_row(sample, cams: Tensor, labels: Tensor, seg_pred: Tensor, target: Tensor, config) -> Sequence[np.ndarray]:
    image_uint8 = sample["image_uint8"][None].to(cams.device)
    roi = torch.ones_like(target)
    reliable = mine_reliable_labels(cams, labels, image_uint8, roi, **config.mining_kwargs())
    cam_map = normalised_cams(upsampled_cams(cams, tuple(target.shape[-2:])), labels).amax(dim=1)
    return [
        sample["image_uint8"].permute(1, 2, 0).numpy(),
        heatmap(cam_map[0].cpu().numpy()),
        colourise(reliable[0].cpu().numpy()),
        colourise(seg_pred[0].cpu().numpy()),
        colourise(target[0].cpu().numpy()),
    ]
