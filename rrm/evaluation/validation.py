"""Validation: of an RRM network (CAM-argmax baseline, segmentation branch) and of a
step-2 segmentation network (DeepLab), with panels; and of either under RRM's inference
protocol (multi-scale, flip, dense CRF)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rrm.cams import cam_argmax_labels, mine_reliable_labels, normalised_cams, upsampled_cams
from rrm.evaluation.metrics import ConfusionMatrix
from rrm.evaluation.panels import (
    LABEL_NAMES,
    SEGMENTATION_COLUMNS,
    blank_tile,
    colourise,
    draw_panel,
    heatmap,
    labels_in,
)
from rrm.evaluation.prediction import refine_with_crf, segmentation_probabilities
from rrm.utils.distributed import Context


def samples_of_rank(dataset, ctx: Context) -> Iterator[tuple[dict, Tensor, Tensor]]:
    """This process's share of ``dataset`` (samples ``rank::world_size``): each sample with
    its image float32 ``[1, 3, H, W]`` and mask int64 ``[1, H, W]`` on the device."""
    for index in range(ctx.rank, len(dataset), ctx.world_size):
        sample = dataset[index]
        yield sample, sample["image"][None].to(ctx.device), sample["mask"][None].to(ctx.device)


def segmentation_labels(seg_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Logits ``[B, L, h, w]`` resized bilinearly to ``size``, then argmax: int64 ``[B, *size]``."""
    return F.interpolate(seg_logits, size=size, mode="bilinear", align_corners=False).argmax(dim=1)


@contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[None]:
    """``model`` in eval mode within the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def validate_one_step(model: torch.nn.Module, dataset, config, ctx: Context,
                      panel_path: Path | None = None, segmentation_trained: bool = True) -> dict[str, float]:
    """mIoU of the CAM baseline and of the segmentation branch of an RRM network on
    ``dataset`` (images are split over the processes; results are all-reduced). ``config``
    gives the CAM scales, the baseline's background score, the mining options and the
    panel size. Rank 0 draws ``panel_path``; while ``segmentation_trained`` is False
    (classification-only steps) its prediction column is blank and says so."""
    num_labels = model.num_classes + 1
    cam_scores, seg_scores = ConfusionMatrix(num_labels), ConfusionMatrix(num_labels)
    panel_rows, captions, shown = [], [], set()
    with evaluation_mode(model):
        for sample, image, target in samples_of_rank(dataset, ctx):
            labels = sample["label"][None].to(ctx.device)
            out = model(image, cam_scales=config.cam_scales)
            cams = upsampled_cams(out["cams"], tuple(target.shape[-2:]))
            cam_pred = cam_argmax_labels(cams, labels, config.cam_bg_threshold)
            seg_pred = segmentation_labels(out["seg_logits"], tuple(target.shape[-2:]))
            cam_scores.update(cam_pred, target)
            seg_scores.update(seg_pred, target)
            if panel_path is not None and ctx.is_main and len(panel_rows) < config.panel_images:
                row, row_captions, row_labels = _one_step_panel_row(sample, out["cams"], labels, seg_pred, target,
                                                                    config, segmentation_trained)
                panel_rows.append(row)
                captions.append(row_captions)
                shown |= row_labels
    if panel_rows:
        draw_panel(panel_rows, panel_path, captions=captions, legend=shown)
    return {"cam_miou": cam_scores.compute().miou, "seg_miou": seg_scores.compute().miou}


@torch.no_grad()
def validate_segmentation(model: torch.nn.Module, dataset, ctx: Context, panel_path: Path | None = None,
                          panel_images: int = 0) -> dict[str, float]:
    """``{"seg_miou": ...}`` of a segmentation network (``model(images)["seg_logits"]``,
    e.g. step 2's DeepLab) on ``dataset``, split over the processes and all-reduced. Rank 0
    draws ``panel_path``: image | prediction | ground truth for ``panel_images`` images."""
    scores = ConfusionMatrix(model.num_classes + 1)
    panel_rows, shown = [], set()
    with evaluation_mode(model):
        for sample, image, target in samples_of_rank(dataset, ctx):
            prediction = segmentation_labels(model(image)["seg_logits"], tuple(target.shape[-2:]))
            scores.update(prediction, target)
            if panel_path is not None and ctx.is_main and len(panel_rows) < panel_images:
                predicted, truth = prediction[0].cpu().numpy(), target[0].cpu().numpy()
                panel_rows.append([sample["image_uint8"].permute(1, 2, 0).numpy(), colourise(predicted),
                                   colourise(truth)])
                shown |= labels_in(predicted, truth)
    if panel_rows:
        draw_panel(panel_rows, panel_path, SEGMENTATION_COLUMNS, legend=shown)
    return {"seg_miou": scores.compute().miou}


@torch.no_grad()
def validate_with_crf(model: torch.nn.Module, dataset, ctx: Context, scales: Sequence[float]) -> float:
    """mIoU of the segmentation branch under RRM's inference protocol: probabilities averaged
    over ``scales`` and their mirror images, refined by the inference dense CRF
    (:data:`rrm_ops.INFERENCE_CRF`). Images are split over the
    processes."""
    scores = ConfusionMatrix(model.num_classes + 1)
    with evaluation_mode(model):
        for sample, image, target in samples_of_rank(dataset, ctx):
            probabilities = segmentation_probabilities(model, image, scales, flip=True)
            refined = refine_with_crf(probabilities, sample["image_uint8"][None].to(ctx.device))
            scores.update(refined.argmax(dim=1), target)
    return scores.compute().miou


def _one_step_panel_row(sample, cams: Tensor, labels: Tensor, seg_pred: Tensor, target: Tensor, config,
                        segmentation_trained: bool) -> tuple[list[np.ndarray], list[str], set[int]]:
    """The tiles of one image, their captions and the labels they show."""
    image_uint8 = sample["image_uint8"][None].to(cams.device)
    roi = torch.ones_like(target)
    reliable = mine_reliable_labels(cams, labels, image_uint8, roi, **config.mining_kwargs())[0].cpu().numpy()
    cam_map = normalised_cams(upsampled_cams(cams, tuple(target.shape[-2:])), labels).amax(dim=1)
    truth, predicted = target[0].cpu().numpy(), seg_pred[0].cpu().numpy()
    classes = [LABEL_NAMES[index + 1] for index in labels[0].nonzero().flatten().tolist()]
    cam_caption = "CAM: " + ", ".join(classes)
    shown = labels_in(reliable, truth)
    if segmentation_trained:
        prediction, prediction_caption = colourise(predicted), ""
        shown |= labels_in(predicted)
    else:
        prediction, prediction_caption = blank_tile(*predicted.shape), "not trained yet"
    tiles = [sample["image_uint8"].permute(1, 2, 0).numpy(), heatmap(cam_map[0].cpu().numpy()),
             colourise(reliable), prediction, colourise(truth)]
    return tiles, ["", cam_caption, "", prediction_caption, ""], shown
