"""Reference gated dense-CRF energy loss (docs/design.md#dense-energy-loss), float64 numpy.

Forward, as RRM's ``DenseEnergyLoss``:

1. downscale by ``s = scale_factor`` like ``F.interpolate(x, scale_factor=s)``: nearest for
   images, rois, seg_label; bilinear (align_corners=False) for probs -> S;
2. ``gate = roi - max_k S_k``; ``gate = 1`` where seg_label == 255; ``gate = max(gate, 0)``;
3. ``S' = S ⊙ roi``; ``A = gate ⊙ W(S')``, W the (unnormalised) bilateral lattice filter on
   features (x/(σxy s), y/(σxy s), r/σrgb, g/σrgb, b/σrgb) of the downscaled image;
4. ``loss = -weight Σ S' ⊙ A / N``.

Gradients w.r.t. the FULL-resolution probs:

* ``rrm``:   ``-2 weight A ⊙ roi / N`` at the small size, pulled back through the bilinear;
* ``exact``: true gradient of step 4 with the gate held constant,
  ``-weight (A + Wᵀ(gate ⊙ S')) ⊙ roi / N``, pulled back the same way. W is not exactly
  symmetric; Wᵀ is the lattice filter with the blur axes in reverse order.

PyTorch index rules reproduced (ATen ``UpSample.h``, ``F.interpolate`` with ``scale_factor``
given and ``recompute_scale_factor`` unset, so the user scale is passed to the kernel):

* output size ``floor(in * s)`` (double product);
* nearest: ``src = min(floor(dst * float(1/s)), in - 1)`` in float32 (``floorf``), with
  ``out == in`` -> identity and ``out == 2 in`` -> ``dst >> 1`` special cases;
* bilinear, align_corners=False: ``scale = 1/s`` (identity if out == in; old PyTorch
  versions used scale 0 when out == 1, torch 2.x does not),
  ``src = max(scale (dst + 0.5) - 0.5, 0)``, ``i0 = min(floor(src), in-1)``,
  ``i1 = i0 + (i0 < in-1)``, ``l1 = clamp(src - i0, 0, 1)``, ``l0 = 1 - l1``.
  For s = 0.5 this is the mean of each 2x2 block (odd trailing rows/columns dropped).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse

from reference.lattice_ref import F32, LatticeRef, bilateral_features


def interp_output_size(in_size: int, scale_factor: float) -> int:
    """Output length of F.interpolate(scale_factor=s): floor(in * s)."""
    return int(math.floor(float(in_size) * scale_factor))


def nearest_source_index(in_size: int, scale_factor: float) -> np.ndarray:
    """Source index of every output index of 'nearest' interpolation: int64 [out]."""
    out_size = interp_output_size(in_size, scale_factor)
    dst = np.arange(out_size, dtype=np.int64)
    if out_size == in_size:
        return dst
    if out_size == 2 * in_size:
        return dst >> 1
    scale = F32(1.0 / scale_factor)  # compute_scales_value<float>
    src = np.floor(dst.astype(F32) * scale).astype(np.int64)
    return np.minimum(src, in_size - 1)


def bilinear_matrix(in_size: int, scale_factor: float) -> np.ndarray:
    """Matrix of 1-D linear interpolation (align_corners=False): float64 [out, in].

    Applied per axis: ``small = Bh @ x @ Bw.T``; its transpose is the backward.
    """
    out_size = interp_output_size(in_size, scale_factor)
    mat = np.zeros((out_size, in_size))
    if out_size == in_size:
        return np.eye(in_size)
    scale = 1.0 / scale_factor  # align_corners=False: the user scale, even when out == 1
    for dst in range(out_size):
        src = max(scale * (dst + 0.5) - 0.5, 0.0)
        i0 = min(int(math.floor(src)), in_size - 1)
        i1 = i0 + (1 if i0 < in_size - 1 else 0)
        lam1 = min(max(src - i0, 0.0), 1.0)
        mat[dst, i0] += 1.0 - lam1
        mat[dst, i1] += lam1
    return mat


def _along_axis(mat: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    """Apply mat [out, in] along one axis of x.

    Uses a scipy sparse product: plain numpy matmul broadcast over N*K small matrices hands
    each to a multithreaded BLAS, which is pathologically slow on a busy 2-core machine.
    """
    moved = np.moveaxis(x, axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    out = np.asarray(scipy.sparse.csr_matrix(mat) @ flat)
    return np.moveaxis(out.reshape((mat.shape[0],) + moved.shape[1:]), 0, axis)


def _nearest_2d(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Pick rows/cols of the last two axes."""
    return x[..., rows, :][..., cols]


def energy_gate(
    small_probs: np.ndarray, small_rois: np.ndarray, small_seg: np.ndarray
) -> np.ndarray:
    """gate = max(roi - max_k S_k, 0), and 1 where seg_label == 255: [N, h, w] float64."""
    gate = small_rois - small_probs.max(axis=1)
    gate = np.where(small_seg == 255, 1.0, gate)
    return np.maximum(gate, 0.0)


def dense_energy_loss_ref(
    images: np.ndarray,
    probs: np.ndarray,
    rois: np.ndarray,
    seg_label: np.ndarray,
    weight: float = 1e-7,
    sigma_rgb: float = 15,
    sigma_xy: float = 100,
    scale_factor: float = 0.5,
    gate: bool = True,
    fixed_gate: np.ndarray | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss and both gradients of RRM's gated dense energy loss.

    Args:
        images: [N, 3, H, W] RGB in 0..255 (float or uint8).
        probs: [N, K, H, W] softmax probabilities.
        rois: [N, H, W] 1 inside the valid crop, 0 outside.
        seg_label: [N, 1, H, W] reliable labels, 255 = unreliable.
        gate: False replaces the gate by 1 everywhere (plain dense-CRF loss).
        fixed_gate: optional [N, h, w] gate (at the downscaled size) used instead of the
            computed one -- for finite-difference checks of the 'exact' gradient.

    Returns:
        (loss, grad_rrm [N, K, H, W], grad_exact [N, K, H, W]), all float64.
    """
    probs = np.asarray(probs, np.float64)
    n_img, _, height, width = probs.shape
    rows = nearest_source_index(height, scale_factor)
    cols = nearest_source_index(width, scale_factor)
    b_h = bilinear_matrix(height, scale_factor)
    b_w = bilinear_matrix(width, scale_factor)

    small_img = _nearest_2d(np.asarray(images, np.float64), rows, cols)
    small_roi = _nearest_2d(np.asarray(rois, np.float64), rows, cols)
    small_seg = _nearest_2d(np.asarray(seg_label)[:, 0], rows, cols)
    small = _along_axis(b_w, _along_axis(b_h, probs, 2), 3)  # separable bilinear, [N, K, h, w]

    if fixed_gate is not None:
        gate_map = np.asarray(fixed_gate, np.float64)
    elif gate:
        gate_map = energy_gate(small, small_roi, small_seg)
    else:
        gate_map = np.ones_like(small_roi)

    masked = small * small_roi[:, None]  # S'
    filtered, filtered_t = _filter_each(
        small_img, masked, gate_map, sigma_xy * scale_factor, sigma_rgb
    )
    energy_a = gate_map[:, None] * filtered  # A
    loss = -weight * float((masked * energy_a).sum()) / n_img

    grad_rrm_small = -2.0 * weight * energy_a * small_roi[:, None] / n_img
    grad_exact_small = -weight * (energy_a + filtered_t) * small_roi[:, None] / n_img
    # Backward of the bilinear downscale: the transposed matrices.
    pull_back = lambda g: _along_axis(b_w.T, _along_axis(b_h.T, g, 2), 3)  # noqa: E731
    return loss, pull_back(grad_rrm_small), pull_back(grad_exact_small)


def _filter_each(
    small_img: np.ndarray,
    masked: np.ndarray,
    gate_map: np.ndarray,
    sigma_xy: float,
    sigma_rgb: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per image: W(S') and Wᵀ(gate ⊙ S') on the bilateral lattice, [N, K, h, w] each."""
    n_img, channels, h, w = masked.shape
    forward = np.empty_like(masked)
    transpose = np.empty_like(masked)
    for n in range(n_img):
        image_hwc = small_img[n].transpose(1, 2, 0)
        lattice = LatticeRef(bilateral_features(image_hwc, sigma_xy, sigma_rgb))
        values = masked[n].reshape(channels, h * w).T  # [P, K] float64
        forward[n] = lattice.filter(values).T.reshape(channels, h, w)
        gated = gate_map[n].reshape(-1, 1) * values
        transpose[n] = lattice.filter(gated, reverse=True).T.reshape(channels, h, w)
    return forward, transpose
