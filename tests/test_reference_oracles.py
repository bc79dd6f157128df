"""Self-checks of the numpy reference oracles in tests/reference (fast, no rrm_ops needed).

If these fail, the oracles -- not the ops -- are wrong.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage import data

from reference.crf_ref import meanfield_ref, pydensecrf_filter, pydensecrf_inference
from reference.energy_loss_ref import (
    bilinear_matrix,
    dense_energy_loss_ref,
    energy_gate,
    interp_output_size,
    nearest_source_index,
)
from reference.lattice_ref import (
    LatticeRef,
    bilateral_features,
    brute_force_gaussian,
    gaussian_features,
    permutohedral_filter,
    symmetric_filter,
)
from reference.mining_ref import reliable_region_labels_ref, sure_cam_region


def _crop(image: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def _smooth_scores(n_labels: int, height: int, width: int, seed: int) -> np.ndarray:
    """Spatially smooth, moderately confident class scores [L, H, W] summing to 1."""
    rng = np.random.default_rng(seed)
    noise = np.stack([gaussian_filter(rng.random((height, width)), 4) for _ in range(n_labels)])
    logits = 6.0 * (noise - noise.mean()) / noise.std()
    e = np.exp(logits - logits.max(axis=0))
    return (e / e.sum(axis=0)).astype(np.float32)


# --------------------------------------------------------------------------- lattice


def test_lattice_has_shape_of_exact_gaussian() -> None:
    img = _crop(data.astronaut(), 100, 200, 24, 32)
    feats = bilateral_features(img, 10, 20)
    vals = np.random.default_rng(0).random((len(feats), 3))
    approx = permutohedral_filter(feats, vals.astype(np.float32))
    exact = brute_force_gaussian(feats, vals)
    for c in range(3):
        assert np.corrcoef(approx[:, c], exact[:, c])[0, 1] >= 0.98
    ratio = approx / exact
    p5, p95 = np.percentile(ratio, [5, 95])
    assert 0.3 < p5 and p95 < 1.0 and p95 / p5 < 1.6  # a roughly constant factor


def test_lattice_reverse_is_transpose() -> None:
    img = _crop(data.chelsea(), 40, 60, 30, 41)
    lattice = LatticeRef(bilateral_features(img, 15, 10))
    rng = np.random.default_rng(1)
    u, v = rng.random((2, 30 * 41, 2))
    lhs = np.sum(u * lattice.filter(v))
    rhs = np.sum(lattice.filter(u, reverse=True) * v)
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
    assert abs(lhs - np.sum(lattice.filter(u) * v)) > 1e-9 * abs(lhs)  # W is not symmetric


def test_lattice_weights_and_simplex() -> None:
    feats = gaussian_features(17, 23, 3)
    lattice = LatticeRef(feats)
    np.testing.assert_allclose(lattice.weights.sum(axis=1), 1.0, atol=1e-5)
    assert (lattice.weights >= -1e-6).all()
    # The d+1 vertices of a simplex are distinct.
    assert all(len(set(row)) == 3 for row in lattice.offsets[:200])


def test_lattice_sse_emulation_is_bitwise_pydensecrf() -> None:
    # 37 x 45 = 1665 points, not a multiple of 4: exercises pydensecrf's padding points.
    img = _crop(data.coffee(), 0, 0, 37, 45)
    rng = np.random.default_rng(2)
    for feats in (bilateral_features(img, 80, 13), gaussian_features(37, 45, 3)):
        for channels in (1, 2, 5):
            vals = rng.random((len(feats), channels)).astype(np.float32)
            theirs = pydensecrf_filter(feats, vals)
            np.testing.assert_array_equal(LatticeRef(feats, emulate_sse=True).filter(vals), theirs)
            ours = LatticeRef(feats).filter(vals)
            rel = np.abs(ours - theirs) / np.abs(theirs)
            assert np.median(rel) <= 1e-6


def test_symmetric_filter_matches_pydensecrf() -> None:
    img = _crop(data.astronaut(), 0, 0, 32, 32)
    feats = bilateral_features(img, 80, 13)
    vals = np.random.default_rng(3).random((len(feats), 4)).astype(np.float32)
    theirs = pydensecrf_filter(feats, vals, normalize="symmetric")
    emulated = symmetric_filter(LatticeRef(feats, emulate_sse=True), vals)
    np.testing.assert_array_equal(emulated, theirs)
    np.testing.assert_allclose(symmetric_filter(LatticeRef(feats), vals), theirs, rtol=1e-5)


# --------------------------------------------------------------------------- CRF


@pytest.mark.parametrize("emulate_sse", [False, True])
def test_meanfield_matches_pydensecrf(emulate_sse: bool) -> None:
    img = _crop(data.astronaut(), 50, 60, 48, 64)
    scores = _smooth_scores(3, 48, 64, seed=4)
    theirs = pydensecrf_inference(scores, img, n_iter=5)
    ours = meanfield_ref(scores, img, n_iter=5, emulate_sse=emulate_sse)
    assert ours.shape == theirs.shape == (3, 48, 64)
    assert np.mean(ours.argmax(0) == theirs.argmax(0)) >= 0.999
    assert np.abs(ours - theirs).max() <= 1e-4  # measured ~1e-6: the two differ by float rounding only


def test_meanfield_changes_the_unary_and_label_mask() -> None:
    img = _crop(data.chelsea(), 100, 100, 40, 50)
    scores = _smooth_scores(5, 40, 50, seed=5)
    mask = np.array([True, False, True, True, False])
    q = meanfield_ref(scores, img, n_iter=5, label_mask=mask)
    assert (q[~mask] == 0).all()
    np.testing.assert_allclose(q[mask].sum(axis=0), 1.0, atol=1e-5)
    alone = pydensecrf_inference(scores[mask], img, n_iter=5)
    np.testing.assert_allclose(q[mask], alone, atol=1e-4)
    # The pairwise terms do something: the result differs from the unary softmax.
    unary_only = meanfield_ref(scores, img, n_iter=0)
    assert np.abs(meanfield_ref(scores, img, n_iter=5) - unary_only).max() > 0.05
    assert (meanfield_ref(scores, img, n_iter=2, label_mask=np.zeros(5, bool)) == 0).all()


# --------------------------------------------------------------------------- energy loss


def test_interpolation_rules_match_torch() -> None:
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    rng = np.random.default_rng(6)
    for size in (1, 2, 5, 7, 32, 33, 101):
        for scale in (0.5, 0.25, 0.3, 0.7, 1.0, 1.5, 2.0):
            if interp_output_size(size, scale) < 1:
                continue
            column = rng.random(size)
            x = torch.from_numpy(column.reshape(1, 1, size, 1))
            near = functional.interpolate(x, scale_factor=(scale, 1.0))[0, 0, :, 0].numpy()
            np.testing.assert_array_equal(near, column[nearest_source_index(size, scale)])
            lin = functional.interpolate(
                x, scale_factor=(scale, 1.0), mode="bilinear", align_corners=False
            )[0, 0, :, 0].numpy()
            np.testing.assert_allclose(lin, bilinear_matrix(size, scale) @ column, atol=1e-12)


def _energy_inputs(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, k, h, w = 2, 3, 13, 12
    logits = 2.0 * rng.normal(size=(n, k, h, w))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rois = np.ones((n, h, w))
    rois[:, :, 9:] = 0
    seg = rng.integers(0, k, (n, 1, h, w))
    seg[rng.random((n, 1, h, w)) < 0.5] = 255
    images = rng.integers(0, 256, (n, 3, h, w)).astype(np.float64)
    return dict(images=images, probs=probs, rois=rois, seg_label=seg)


def test_energy_exact_gradient_matches_finite_differences() -> None:
    inputs = _energy_inputs(7)
    kw = dict(weight=1.0, sigma_rgb=15, sigma_xy=10)
    loss, grad_rrm, grad_exact = dense_energy_loss_ref(**inputs, **kw)
    assert loss < 0 and np.isfinite(grad_exact).all()

    # The gate at the base point, held constant for the finite differences.
    b_h, b_w = bilinear_matrix(13, 0.5), bilinear_matrix(12, 0.5)
    rows, cols = nearest_source_index(13, 0.5), nearest_source_index(12, 0.5)
    small = np.einsum("ah,nkhw,bw->nkab", b_h, inputs["probs"], b_w)
    small_roi = inputs["rois"][:, rows][:, :, cols]
    gate = energy_gate(small, small_roi, inputs["seg_label"][:, 0, rows][:, :, cols])
    assert 0 < gate.mean() < 1  # both gated and ungated pixels occur

    def loss_at(probs: np.ndarray) -> float:
        return dense_energy_loss_ref(**{**inputs, "probs": probs}, fixed_gate=gate, **kw)[0]

    rng = np.random.default_rng(8)
    eps = 1e-6
    for _ in range(4):  # directional derivatives
        direction = rng.normal(size=grad_exact.shape)
        step = eps * direction
        fd = (loss_at(inputs["probs"] + step) - loss_at(inputs["probs"] - step)) / (2 * eps)
        assert fd == pytest.approx(np.sum(grad_exact * direction), rel=1e-6)
    for idx in [(0, 0, 0, 0), (1, 2, 5, 7), (0, 1, 12, 3), (1, 0, 3, 11)]:  # single entries
        bump = np.zeros_like(grad_exact)
        bump[idx] = eps
        fd = (loss_at(inputs["probs"] + bump) - loss_at(inputs["probs"] - bump)) / (2 * eps)
        assert fd == pytest.approx(grad_exact[idx], abs=1e-8 * np.abs(grad_exact).max())
    # Full columns 10-11 feed only small column 5, whose nearest ROI sample (column 10) is 0.
    assert (grad_rrm[..., 10:] == 0).all() and (grad_exact[..., 10:] == 0).all()


def test_energy_gate_rules() -> None:
    probs = np.array([[0.7, 0.2], [0.3, 0.8]]).reshape(1, 2, 1, 2)  # max_k = 0.7, 0.8
    rois = np.array([1.0, 0.0]).reshape(1, 1, 2)
    gate = energy_gate(probs, rois, np.array([0, 0]).reshape(1, 1, 2))
    np.testing.assert_allclose(gate, [[[0.3, 0.0]]])  # roi - max, clamped at 0
    gate = energy_gate(probs, rois, np.array([255, 255]).reshape(1, 1, 2))
    np.testing.assert_allclose(gate, [[[1.0, 1.0]]])  # unreliable pixels: 1, even outside the roi


def test_energy_loss_matches_dense_matrix_formula() -> None:
    inputs = _energy_inputs(10)
    loss, grad_rrm, _ = dense_energy_loss_ref(**inputs, weight=1e-3, sigma_rgb=15, sigma_xy=10)
    b_h, b_w = bilinear_matrix(13, 0.5), bilinear_matrix(12, 0.5)
    rows, cols = nearest_source_index(13, 0.5), nearest_source_index(12, 0.5)
    assert list(rows) == [0, 2, 4, 6, 8, 10] and list(cols) == [0, 2, 4, 6, 8, 10]
    expected_loss = 0.0
    for n in range(2):
        small = np.einsum("ah,khw,bw->kab", b_h, inputs["probs"][n], b_w).reshape(3, 36)
        roi = inputs["rois"][n][np.ix_(rows, cols)].reshape(36)
        unreliable = inputs["seg_label"][n, 0][np.ix_(rows, cols)].reshape(36) == 255
        gate = np.maximum(np.where(unreliable, 1.0, roi - small.max(axis=0)), 0.0)
        image = inputs["images"][n][:, rows][:, :, cols].transpose(1, 2, 0)
        # Dense W: column q is the filter of the unit vector e_q; sigma_xy 10 * scale 0.5.
        dense_w = LatticeRef(bilateral_features(image, 5, 15)).filter(np.eye(36))
        masked = small * roi
        energy_a = gate * (dense_w @ masked.T).T
        expected_loss += -1e-3 * np.sum(masked * energy_a) / 2
        grad_small = (-2e-3 * energy_a * roi / 2).reshape(3, 6, 6)
        pulled = np.einsum("ah,kab,bw->khw", b_h, grad_small, b_w)
        np.testing.assert_allclose(grad_rrm[n], pulled, rtol=1e-10, atol=1e-18)
    assert loss == pytest.approx(expected_loss, rel=1e-10)


def test_energy_rrm_gradient_is_twice_gated_filter() -> None:
    inputs = _energy_inputs(9)
    # Ungated, W is nearly symmetric, so 'rrm' = -2 W S' is close to the exact gradient.
    _, grad_rrm, grad_exact = dense_energy_loss_ref(**inputs, weight=1.0, sigma_xy=10, gate=False)
    assert np.abs(grad_rrm - grad_exact).max() <= 0.05 * np.abs(grad_exact).max()
    # Linear in weight, and the loss is weight * (energy with weight 1).
    loss1, g1, _ = dense_energy_loss_ref(**inputs, weight=1.0)
    loss2, g2, _ = dense_energy_loss_ref(**inputs, weight=1e-7)
    assert loss2 == pytest.approx(1e-7 * loss1, rel=1e-12)
    np.testing.assert_allclose(g2, 1e-7 * g1, rtol=1e-12)


# --------------------------------------------------------------------------- mining


def _blob_cams(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    blobs = [(20, 20, 10), (45, 45, 14), (30, 50, 8), (10, 10, 5)]
    maps = [np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * r * r)) for cy, cx, r in blobs]
    return 3.0 * np.stack(maps).astype(np.float32)


def test_mining_labels_domain_and_consistency() -> None:
    img = _crop(data.astronaut(), 0, 170, 64, 64)
    cams = _blob_cams(64, 64)
    cams[3] = 0.0  # present class whose CAM never exceeds cam_floor
    cls = np.array([1, 0, 1, 1])
    labels, q_low, q_high, sure = reliable_region_labels_ref(cams, cls, img, return_details=True)
    assert labels.dtype == np.int64 and labels.shape == (64, 64)
    assert set(np.unique(labels)) <= {0, 1, 3, 4, 255}
    assert not (labels == 2).any() and not (labels == 4).any()
    assert (q_low[2] == 0).all() and (q_high[2] == 0).all()
    reliable = labels != 255
    assert reliable.any() and (~reliable).any()
    assert sure[reliable].all()
    conf = np.maximum(q_high[0], q_low[1:].max(axis=0))
    assert (conf[reliable] >= 0.8).all()
    # Steps 5-6 in closed form: background from the high-alpha CRF, objects from the low one.
    low, high = q_low.argmax(axis=0), q_high.argmax(axis=0)
    expected = np.where(high == 0, 0, np.where(low == 0, 255, low))
    expected[(conf < 0.8) | ~sure] = 255
    np.testing.assert_array_equal(labels, expected)
    assert (labels == 0).any() and ((labels > 0) & reliable).any()


def test_mining_sure_region_skips_class_below_floor() -> None:
    cam_all = np.zeros((3, 4, 5), np.float32)
    cam_all[0, 2:] = 0.9  # background wins rows 2-3, above bg_sure
    cam_all[1, 0] = [0.2, 0.4, 0.6, 0.8, 1.0]  # class 1 wins row 0
    cam_all[2, 1] = 0.05  # class 2 wins row 1, but never above cam_floor
    low = np.array([[1] * 5, [2] * 5, [0] * 5, [0] * 5])
    sure = sure_cam_region(cam_all, low, fg_quantile=0.6, cam_floor=0.1, bg_sure=0.8)
    # class 1: n = 5, t = sorted[floor(5 * 0.6)] = 0.8, sure where > 0.8
    np.testing.assert_array_equal(sure[0], [False, False, False, False, True])
    assert not sure[1].any()  # n = 0: no sure region, no crash
    assert sure[2:].all()


def test_mining_without_present_class_is_background() -> None:
    img = _crop(data.coffee(), 0, 0, 20, 24)
    labels = reliable_region_labels_ref(_blob_cams(20, 24), np.zeros(4, int), img)
    assert (labels == 0).all()
