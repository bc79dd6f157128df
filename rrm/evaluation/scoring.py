"""Scores of predicted masks against the ground truth of a split (``rrm.evaluate``).

Predictions may be palette, grey-level or VOC-coloured RGB PNGs holding 0..20, each at the
size of its ground-truth mask (``SegmentationClass``, else ``SegmentationClassAug``).
Pixels whose ground truth is 255 (VOC's boundary/void band) are not counted. A prediction
of 255 on a counted pixel (pseudo labels mark unreliable pixels so) counts as a miss for the
ground-truth class and as a hit for no class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rrm.data import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES, check_same_size, read_mask, split_names
from rrm.data.layout import MASK_DIRS, files_in, find_masks, first_names
from rrm.evaluation.metrics import ConfusionMatrix
from rrm.utils.errors import DatasetError, InputError

CLASS_NAMES: tuple[str, ...] = ("background", *VOC_CLASSES)


@dataclass
class EvaluationReport:
    """Scores of a split. ``iou``: per class of :data:`CLASS_NAMES`, NaN for classes in
    neither the ground truth nor the predictions; ``miou`` their mean over the others;
    ``ignored_predictions``: counted pixels predicted as 255."""

    iou: list[float]
    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    num_images: int
    ignored_predictions: int

    def to_json(self) -> dict:
        """JSON-ready dict of fractions; NaN becomes null."""
        def clean(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "miou": clean(self.miou),
            "pixel_accuracy": clean(self.pixel_accuracy),
            "mean_accuracy": clean(self.mean_accuracy),
            "iou": {name: clean(value) for name, value in zip(CLASS_NAMES, self.iou)},
            "num_images": self.num_images,
            "ignored_predictions": self.ignored_predictions,
        }

    def table(self) -> str:
        """Per-class IoU and the summary scores, in percent."""
        def percent(value: float) -> str:
            return "-" if math.isnan(value) else f"{100 * value:6.2f}"

        width = max(len(name) for name in (*CLASS_NAMES, "pixel accuracy"))
        lines = [f"{'class':<{width}}  IoU (%)"]
        lines += [f"{name:<{width}}  {percent(value)}" for name, value in zip(CLASS_NAMES, self.iou)]
        lines += [
            f"{'mIoU':<{width}}  {percent(self.miou)}",
            f"{'pixel accuracy':<{width}}  {percent(self.pixel_accuracy)}",
            f"{'mean accuracy':<{width}}  {percent(self.mean_accuracy)}",
            f"{self.num_images} images",
        ]
        if self.ignored_predictions:
            lines.append(f"{self.ignored_predictions} counted pixels predicted as {IGNORE_INDEX} (scored as misses)")
        return "\n".join(lines)


def ground_truth_paths(root: Path, names: Sequence[str]) -> list[Path]:
    """The ground-truth mask of each image (``SegmentationClass`` first); raises
    :class:`DatasetError` naming the first images without one and their count."""
    paths = find_masks(root, names)
    missing = [name for name, path in zip(names, paths) if path is None]
    if missing:
        folders = " or ".join(str(root / folder) for folder in MASK_DIRS)
        raise DatasetError(f"no ground-truth mask in {folders} for {len(missing)} of {len(names)} images "
                           f"({first_names(missing)})")
    return paths


def prediction_paths(pred_dir: Path, names: Sequence[str]) -> list[Path]:
    """``pred_dir/<name>.png`` for each image; raises :class:`InputError` naming the first
    missing files and their count."""
    if not pred_dir.is_dir():
        raise InputError(f"prediction folder not found: {pred_dir}")
    return files_in(pred_dir, names, "predictions")


def evaluate_files(pred_paths: Sequence[Path], truth_paths: Sequence[Path]) -> EvaluationReport:
    """Score predictions against ground-truth masks (pairs of files of the same size)."""
    # One extra prediction column collects predicted 255s: they add to their ground-truth
    # class's row (a miss) but to no class's column.
    void_label = NUM_CLASSES + 1
    confusion = ConfusionMatrix(void_label + 1, ignore_index=IGNORE_INDEX)
    for pred_path, truth_path in zip(pred_paths, truth_paths):
        truth = read_mask(truth_path)
        prediction = read_mask(pred_path)
        check_same_size(prediction, f"prediction {pred_path}", truth, f"ground truth {truth_path}")
        prediction_t = torch.from_numpy(prediction).long()
        prediction_t[prediction_t == IGNORE_INDEX] = void_label
        confusion.update(prediction_t, torch.from_numpy(truth).long())
    scores = confusion.compute()
    iou = scores.iou[:void_label]
    return EvaluationReport(
        iou=iou.tolist(),
        miou=float(iou.nanmean()) if not iou.isnan().all() else float("nan"),
        pixel_accuracy=scores.pixel_accuracy,
        mean_accuracy=scores.mean_accuracy,
        num_images=len(pred_paths),
        ignored_predictions=int(confusion.reduced_matrix()[:, void_label].sum()),
    )


def evaluate_split(pred_dir: str | Path, data_root: str | Path, split: str = "val") -> EvaluationReport:
    """Score ``pred_dir/<name>.png`` for every image of ``split`` of ``data_root``."""
    names = split_names(data_root, split)
    truth_paths = ground_truth_paths(Path(data_root), names)
    return evaluate_files(prediction_paths(Path(pred_dir), names), truth_paths)
