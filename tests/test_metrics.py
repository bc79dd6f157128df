"""Confusion-matrix metrics against a hand-computed example, and their distributed sum."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rrm.evaluation.metrics import ConfusionMatrix, confusion_matrix, scores_from_confusion

# 3 classes, 255 = ignore.
TARGET = torch.tensor([[0, 0, 1, 1, 255], [2, 2, 2, 0, 255]])
PREDICTION = torch.tensor([[0, 1, 1, 1, 2], [2, 2, 0, 0, 1]])


def test_hand_computed_example():
    # Counted pixels (target != 255): 8. Predictions per ground-truth class:
    #   class 0 at (0,0), (0,1), (1,3) -> 0, 1, 0; class 1 -> 1, 1; class 2 -> 2, 2, 0
    # Confusion (rows = truth, cols = prediction):
    #   [[2, 1, 0],
    #    [0, 2, 0],
    #    [1, 0, 2]]
    # IoU_0 = 2 / (3 + 3 - 2) = 0.5; IoU_1 = 2 / (2 + 3 - 2) = 2/3; IoU_2 = 2 / (3 + 2 - 2) = 2/3
    # mIoU = (0.5 + 2/3 + 2/3) / 3 = 11/18; pixel accuracy = 6 / 8; mean accuracy = (2/3 + 1 + 2/3) / 3
    matrix = confusion_matrix(PREDICTION, TARGET, num_classes=3)
    assert matrix.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert matrix.dtype == torch.int64
    scores = scores_from_confusion(matrix)
    torch.testing.assert_close(scores.iou, torch.tensor([0.5, 2 / 3, 2 / 3], dtype=torch.float64))
    assert scores.miou == pytest.approx(11 / 18)
    assert scores.pixel_accuracy == pytest.approx(0.75)
    assert scores.mean_accuracy == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)


def test_absent_classes_are_left_out_of_the_mean():
    matrix = confusion_matrix(torch.tensor([0, 0, 3]), torch.tensor([0, 0, 3]), num_classes=5)
    scores = scores_from_confusion(matrix)
    assert scores.iou[0] == 1 and scores.iou[3] == 1
    assert math.isnan(scores.iou[1]) and math.isnan(scores.iou[2]) and math.isnan(scores.iou[4])
    assert scores.miou == 1.0
    # A class predicted but absent from the ground truth counts, with IoU 0.
    assert scores_from_confusion(confusion_matrix(torch.tensor([1, 0]), torch.tensor([0, 0]), 2)).miou == 0.25


def test_accumulation_and_errors():
    meter = ConfusionMatrix(num_classes=3)
    meter.update(PREDICTION[:1], TARGET[:1])
    meter.update(PREDICTION[1:], TARGET[1:])
    first = meter.compute()
    assert first.miou == pytest.approx(11 / 18)
    assert meter.compute().miou == first.miou  # compute does not change the counts
    assert math.isnan(ConfusionMatrix(num_classes=3).compute().miou)
    with pytest.raises(ValueError, match="labels must be in 0..2"):
        meter.update(torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="shape"):
        meter.update(torch.tensor([0, 1]), torch.tensor([0]))


def _distributed_worker(rank: int, world_size: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        meter = ConfusionMatrix(num_classes=3)
        meter.update(PREDICTION[rank:rank + 1], TARGET[rank:rank + 1])  # each rank sees one row
        results[rank] = meter.reduced_matrix().tolist()
    finally:
        dist.destroy_process_group()


def test_distributed_reduction(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_distributed_worker, args=(2, str(tmp_path / "store"), results), nprocs=2, join=True)
        expected = confusion_matrix(PREDICTION, TARGET, 3).tolist()
        assert results[0] == expected and results[1] == expected
