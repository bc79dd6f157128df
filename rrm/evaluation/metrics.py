"""Segmentation metrics from a confusion matrix (per-class IoU, mIoU, pixel accuracy), and
the precision and coverage of pseudo labels.

The matrix is ``[K, K]`` int64 with rows = ground truth and columns = prediction; pixels
whose ground truth is ``ignore_index`` (255, VOC's boundary/void label) are not counted.
Under ``torch.distributed`` the per-process matrices are summed with ``all_reduce``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rrm.data import IGNORE_INDEX
from rrm.utils.distributed import all_reduce_sum


def confusion_matrix(
    prediction: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Confusion matrix of integer label maps of the same shape (any shape, e.g. ``[B, H, W]``).

    Returns int64 ``[num_classes, num_classes]`` on ``target``'s device; entry ``[t, p]``
    counts pixels of ground truth ``t`` predicted as ``p``. Raises ``ValueError`` if shapes
    differ or a counted pixel has a label outside ``0..num_classes-1``.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    target = target.reshape(-1).long()
    prediction = prediction.reshape(-1).long().to(target.device)
    valid = target != ignore_index
    target, prediction = target[valid], prediction[valid]
    if target.numel() and (
        int(target.min()) < 0 or int(target.max()) >= num_classes
        or int(prediction.min()) < 0 or int(prediction.max()) >= num_classes
    ):
        raise ValueError(f"labels must be in 0..{num_classes - 1} (or {ignore_index} in the target)")
    counts = torch.bincount(target * num_classes + prediction, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


@dataclass
class SegmentationScores:
    """Scores of a confusion matrix. ``iou`` is float64 ``[K]``, NaN for classes that occur
    neither in the ground truth nor in the predictions; ``miou`` is the mean over the other
    classes; ``pixel_accuracy`` is correct / counted pixels; ``mean_accuracy`` the mean
    per-class recall over classes present in the ground truth."""

    iou: torch.Tensor
    miou: float
    pixel_accuracy: float
    mean_accuracy: float


def scores_from_confusion(matrix: torch.Tensor) -> SegmentationScores:
    """IoU_c = TP / (TP + FP + FN) per class, and the summary scores."""
    matrix = matrix.double().cpu()
    true_positive = matrix.diagonal()
    ground_truth = matrix.sum(dim=1)
    predicted = matrix.sum(dim=0)
    union = ground_truth + predicted - true_positive
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), torch.full_like(union, float("nan")))
    recall = true_positive[ground_truth > 0] / ground_truth[ground_truth > 0]
    total = matrix.sum()
    return SegmentationScores(
        iou=iou,
        miou=float(iou.nanmean()) if (union > 0).any() else float("nan"),
        pixel_accuracy=float(true_positive.sum() / total) if total > 0 else float("nan"),
        mean_accuracy=float(recall.mean()) if recall.numel() else float("nan"),
    )


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches.

    The matrix lives on the device of the first ``target`` it sees. :meth:`compute` sums the matrices of all processes when
    ``torch.distributed`` is initialised (every process must call it) and never changes the
    local counts, so it can be called more than once.
    """

    def __init__(self, num_classes: int = 21, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix: torch.Tensor | None = None

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add label maps (integer, same shape; see :func:`confusion_matrix`)."""
        batch = confusion_matrix(prediction, target, self.num_classes, self.ignore_index)
        self.matrix = batch if self.matrix is None else self.matrix + batch.to(self.matrix.device)

    def reduced_matrix(self) -> torch.Tensor:
        """The matrix summed over all processes (the local matrix when not distributed)."""
        if self.matrix is None:
            return all_reduce_sum(torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64))
        return all_reduce_sum(self.matrix)

    def compute(self) -> SegmentationScores:
        """Scores of the (reduced) matrix."""
        return scores_from_confusion(self.reduced_matrix())


@dataclass
class LabelQuality:
    """Agreement of pseudo labels with ground-truth masks, accumulated on the device.

    precision: correct / kept pixels (kept = not ignored); coverage: kept / valid pixels.
    """

    counts: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))

    def update(self, labels: torch.Tensor, target: torch.Tensor) -> None:
        valid = target != IGNORE_INDEX
        kept = valid & (labels != IGNORE_INDEX)
        correct = kept & (labels == target)
        batch = torch.stack([correct.sum(), kept.sum(), valid.sum()]).to(torch.float64)
        self.counts = self.counts.to(batch.device) + batch

    def reduced_counts(self) -> torch.Tensor:
        """float64 ``[3]``: (correct, kept, valid) pixels summed over all processes."""
        return all_reduce_sum(self.counts)

    def reduced(self) -> dict[str, float]:
        """Precision and coverage over all processes (NaN where there is nothing to count)."""
        correct, kept, valid = self.reduced_counts().tolist()
        return {
            "precision": correct / kept if kept else float("nan"),
            "coverage": kept / valid if valid else float("nan"),
        }
