"""prune_reliable_labels (steps 2, 4-6 of docs/design.md#reliable-region-mining) against the reference's steps."""

import numpy as np
import pytest
import torch

import rrm_ops  # noqa: F401  (registers the ops)
from reference.mining_ref import sure_cam_region

PARAMS = dict(cam_alpha=32.0, fg_quantile=0.6, cam_floor=0.1, bg_sure=0.8, crf_sure=0.8, ignore_index=255)


def _reference(cams: np.ndarray, q_low: np.ndarray, q_high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    background = np.power(np.float32(1) - cams.max(axis=0), np.float32(PARAMS["cam_alpha"]))[None]
    cam_all = np.concatenate([background, cams])
    low, high = q_low.argmax(0), q_high.argmax(0)
    sure = sure_cam_region(cam_all, low, PARAMS["fg_quantile"], PARAMS["cam_floor"], PARAMS["bg_sure"])
    labels = low.astype(np.int64)
    labels[low == 0] = 255
    labels[high == 0] = 0
    conf = np.concatenate([q_high[:1], q_low[1:]]).max(axis=0)
    labels[(conf < np.float32(PARAMS["crf_sure"])) | ~sure] = 255
    return labels, sure


def _random_inputs(batch: int, classes: int, pixels: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    cams = torch.rand(batch, classes, pixels, generator=generator) ** 3
    cams[:, 0] = 0.05 * cams[:, 0]  # a class whose CAM never exceeds cam_floor
    cams = cams / (cams.amax(dim=2, keepdim=True) + 1e-5)
    q_low = torch.softmax(4 * torch.randn(batch, classes + 1, pixels, generator=generator), dim=1)
    q_high = torch.softmax(4 * torch.randn(batch, classes + 1, pixels, generator=generator), dim=1)
    return cams, q_low, q_high


@pytest.mark.parametrize("batch, classes, pixels", [(1, 1, 7), (2, 3, 500), (3, 20, 1200)])
def test_matches_reference(batch, classes, pixels):
    cams, q_low, q_high = _random_inputs(batch, classes, pixels, seed=classes)
    labels, sure = torch.ops.rrm_ops.prune_reliable_labels(cams, q_low, q_high, **PARAMS, q_labels=None)
    assert labels.dtype == torch.int64 and sure.dtype == torch.bool
    for b in range(batch):
        expected_labels, expected_sure = _reference(cams[b].numpy(), q_low[b].numpy(), q_high[b].numpy())
        np.testing.assert_array_equal(labels[b].numpy(), expected_labels)
        np.testing.assert_array_equal(sure[b].numpy(), expected_sure)


@pytest.mark.parametrize("present", [[0, 2, 5], [0], [1, 3], [0, 1, 2, 3, 4, 5]])
def test_q_over_present_label_rows_equals_q_over_all_labels(present):
    # The mining op hands over Q of each image's present labels only (ascending, then -1
    # padding rows); absent labels have Q = 0 in the all-label layout.
    batch, classes, pixels, rows = 2, 5, 900, 8
    cams, _, _ = _random_inputs(batch, classes, pixels, seed=len(present))
    generator = torch.Generator().manual_seed(11)
    dense = torch.zeros(2, batch, classes + 1, pixels)
    dense[:, :, present] = torch.softmax(4 * torch.randn(2, batch, len(present), pixels, generator=generator), dim=2)
    q_labels = torch.full((batch, rows), -1, dtype=torch.int32)
    q_labels[:, : len(present)] = torch.tensor(present, dtype=torch.int32)
    by_rows = torch.zeros(2, batch, rows, pixels)
    by_rows[:, :, : len(present)] = dense[:, :, present]
    expected = torch.ops.rrm_ops.prune_reliable_labels(cams, dense[0], dense[1], **PARAMS, q_labels=None)
    got = torch.ops.rrm_ops.prune_reliable_labels(cams, by_rows[0], by_rows[1], **PARAMS, q_labels=q_labels)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_bad_q_labels_raise_clear_errors():
    cams, q_low, q_high = _random_inputs(2, 3, 50, seed=1)
    with pytest.raises(RuntimeError, match="q_labels must have dtype Int"):
        torch.ops.rrm_ops.prune_reliable_labels(cams, q_low, q_high, **PARAMS, q_labels=torch.zeros(2, 4))
    with pytest.raises(RuntimeError, match=r"q_low must be \[B, R, P\]"):
        torch.ops.rrm_ops.prune_reliable_labels(
            cams, q_low, q_high, **PARAMS, q_labels=torch.zeros(2, 2, dtype=torch.int32)
        )


def test_reliable_pixels_exist_and_are_a_strict_subset():
    cams, q_low, q_high = _random_inputs(2, 4, 3000, seed=7)
    labels, sure = torch.ops.rrm_ops.prune_reliable_labels(cams, q_low, q_high, **{**PARAMS, "crf_sure": 0.3},
                                                           q_labels=None)
    kept = labels != 255
    assert 0 < kept.sum() < kept.numel()
    assert not (kept & ~sure).any()


def test_thread_count_does_not_change_results():
    cams, q_low, q_high = _random_inputs(2, 5, 4000, seed=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = torch.ops.rrm_ops.prune_reliable_labels(cams, q_low, q_high, **PARAMS, q_labels=None)
        torch.set_num_threads(2)
        double = torch.ops.rrm_ops.prune_reliable_labels(cams, q_low, q_high, **PARAMS, q_labels=None)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(single, double))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(fg_quantile=1.0), "fg_quantile must be in"),
        (dict(cam_floor=-0.1), "cam_floor must be in"),
        (dict(bg_sure=1.5), "bg_sure must be in"),
        (dict(cam_alpha=0.0), "cam_alpha must be"),
    ],
)
def test_bad_parameters_raise_clear_errors(change, message):
    cams, q_low, q_high = _random_inputs(1, 2, 10, seed=0)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.rrm_ops.prune_reliable_labels(cams, q_low, q_high, **{**PARAMS, **change}, q_labels=None)


def test_bad_shapes_raise_clear_errors():
    cams, q_low, q_high = _random_inputs(1, 2, 10, seed=0)
    with pytest.raises(RuntimeError, match=r"q_low must be \[B, C\+1, P\]"):
        torch.ops.rrm_ops.prune_reliable_labels(cams, q_low[:, :2], q_high, **PARAMS, q_labels=None)
    with pytest.raises(RuntimeError, match="cams must have dtype"):
        torch.ops.rrm_ops.prune_reliable_labels(cams.double(), q_low, q_high, **PARAMS, q_labels=None)


def test_passes_opcheck():
    cams, q_low, q_high = _random_inputs(2, 3, 50, seed=1)
    torch.library.opcheck(torch.ops.rrm_ops.prune_reliable_labels, (cams, q_low, q_high, *PARAMS.values(), None))
