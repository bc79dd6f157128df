"""Reference dense-CRF mean-field inference (docs/design.md#dense-crf).

Two oracles for the same computation:

* :func:`pydensecrf_inference` -- pydensecrf itself, called exactly as PSA/RRM call it;
* :func:`meanfield_ref` -- the same mean field written in numpy on top of
  :mod:`reference.lattice_ref`, mirroring pydensecrf's float32 arithmetic, with the
  ``label_mask`` semantics of the rrm op.

:func:`pydensecrf_filter` exposes pydensecrf's raw lattice filter (through one
``stepInference`` with zero unary and one Potts kernel of weight 1), so lattice outputs can
be compared with pydensecrf directly, not only through whole CRF runs.
"""

from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf import eigen
from pydensecrf.utils import unary_from_softmax

from reference.lattice_ref import (
    F32,
    LatticeRef,
    bilateral_features,
    gaussian_features,
    symmetric_filter,
)


def pydensecrf_inference(
    scores: np.ndarray,
    image_hwc: np.ndarray,
    n_iter: int = 10,
    gaussian_sxy: float = 3,
    gaussian_compat: float = 3,
    bilateral_sxy: float = 80,
    bilateral_srgb: float = 13,
    bilateral_compat: float = 10,
) -> np.ndarray:
    """Mean-field Q from pydensecrf: scores [L, H, W] (>= 0, need not sum to 1), image
    uint8 [H, W, 3] -> Q float32 [L, H, W]."""
    n_labels, height, width = scores.shape
    crf = dcrf.DenseCRF2D(width, height, n_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(scores)))
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=bilateral_sxy,
        srgb=bilateral_srgb,
        rgbim=np.ascontiguousarray(image_hwc, dtype=np.uint8),
        compat=bilateral_compat,
    )
    q = np.array(crf.inference(n_iter), dtype=F32)
    return q.reshape(n_labels, height, width)


def pydensecrf_filter(
    features: np.ndarray, values: np.ndarray, normalize: str = "none"
) -> np.ndarray:
    """pydensecrf's permutohedral filter of values [P, C] over features [P, d] -> float32 [P, C].

    normalize: ``"none"`` (raw lattice output) or ``"symmetric"`` (n ⊙ filter(n ⊙ v)).
    Works because one mean-field step computes ``tmp1 = -U - potts(filter(Q))`` with
    ``potts(x) = -w x``; with U = 0 and w = 1, tmp1 is the filter of whatever Q holds.
    """
    n_points, channels = values.shape
    norm_type = {"none": dcrf.NO_NORMALIZATION, "symmetric": dcrf.NORMALIZE_SYMMETRIC}[normalize]
    crf = dcrf.DenseCRF(n_points, channels)
    crf.setUnaryEnergy(np.zeros((channels, n_points), F32))
    crf.addPairwiseEnergy(
        np.ascontiguousarray(features.T, dtype=F32), compat=1.0, normalization=norm_type
    )
    q = eigen.matrixXf(np.ascontiguousarray(values.T, dtype=F32))
    tmp1 = eigen.matrixXf(np.zeros((channels, n_points), F32))
    tmp2 = eigen.matrixXf(np.zeros((channels, n_points), F32))
    crf.stepInference(q, tmp1, tmp2)
    return np.array(tmp1).T.copy()


def _exp_normalize(logits: np.ndarray) -> np.ndarray:
    """Softmax over labels of float32 [P, L], as pydensecrf's expAndNormalize."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _meanfield_present(
    scores: np.ndarray,
    lattices: list[tuple[LatticeRef, float]],
    n_iter: int,
) -> np.ndarray:
    """Mean field on all given labels: scores [L, P] -> Q float32 [L, P]."""
    # pydensecrf's unary_from_softmax: log in the scores' dtype, then float32.
    unary = (-np.log(np.clip(scores, 1e-5, 1.0))).astype(F32).T  # [P, L]
    neg_unary = -unary
    q = _exp_normalize(neg_unary)
    for _ in range(n_iter):
        logits = neg_unary.copy()
        for lattice, weight in lattices:  # Gaussian kernel first, then bilateral
            # PottsCompatibility: tmp2 = -w * filtered; inference: tmp1 -= tmp2.
            logits -= -F32(weight) * symmetric_filter(lattice, q)
        q = _exp_normalize(logits)
    return q.T


def meanfield_ref(
    scores: np.ndarray,
    image_hwc: np.ndarray,
    n_iter: int = 10,
    gaussian_sxy: float = 3,
    gaussian_compat: float = 3,
    bilateral_sxy: float = 80,
    bilateral_srgb: float = 13,
    bilateral_compat: float = 10,
    label_mask: np.ndarray | None = None,
    emulate_sse: bool = False,
) -> np.ndarray:
    """Dense-CRF mean field with lattice_ref: scores [L, H, W], image uint8 [H, W, 3] -> Q
    float32 [L, H, W].

    ``U = -log(clip(scores, 1e-5, 1))``, ``Q0 = softmax(-U)``, then n_iter times
    ``Q = softmax(-U + sum_k w_k n_k ⊙ filter_k(n_k ⊙ Q))`` (Gaussian kernel on (x, y)/sxy,
    bilateral kernel on (x, y)/sxy, rgb/srgb; both symmetric-normalised; Potts, w = compat).

    label_mask: optional bool [L]; absent labels get Q = 0 and the present ones are computed
    as if the CRF ran on the present labels alone. With no label present, Q is all zero.
    emulate_sse: build the lattices as pydensecrf's x86 build does (bitwise-equal filters).
    """
    n_labels, height, width = scores.shape
    mask = np.ones(n_labels, bool) if label_mask is None else np.asarray(label_mask, bool)
    q = np.zeros((n_labels, height * width), F32)
    if not mask.any():
        return q.reshape(n_labels, height, width)
    lattices = [
        (LatticeRef(gaussian_features(height, width, gaussian_sxy), emulate_sse), gaussian_compat),
        (
            LatticeRef(bilateral_features(image_hwc, bilateral_sxy, bilateral_srgb), emulate_sse),
            bilateral_compat,
        ),
    ]
    present = scores[mask].reshape(int(mask.sum()), height * width)
    q[mask] = _meanfield_present(present, lattices, n_iter)
    return q.reshape(n_labels, height, width)
