"""Reference reliable region mining (docs/design.md#reliable-region-mining) for ONE image, numpy + pydensecrf.

Follows RRM's public ``compute_seg_label`` step by step, with the CRFs run by
:func:`reference.crf_ref.pydensecrf_inference` at the training parameters
(Gaussian (3, 3), bilateral (80, 13, 10), 10 iterations). All array arithmetic is float32,
as the op's is.

No present class (all cls_labels 0; the public release crashes there): the CRFs run on the
background label alone, so Q_low = Q_high = 1 on background and every pixel is labelled 0
(background), provided bg_sure < 1 and crf_sure <= 1. This equals what the general rules
give for a background-only label set.
"""

from __future__ import annotations

import numpy as np

from reference.crf_ref import pydensecrf_inference

F32 = np.float32

# Training-time mining CRF parameters (docs/design.md#mean-field).
TRAIN_CRF = dict(
    n_iter=10,
    gaussian_sxy=3,
    gaussian_compat=3,
    bilateral_sxy=80,
    bilateral_srgb=13,
    bilateral_compat=10,
)


def normalized_cams(cams: np.ndarray, cls_labels: np.ndarray) -> np.ndarray:
    """Step 1: absent classes zeroed, each map divided by (its max + 1e-5): float32 [C, H, W]."""
    present = np.asarray(cls_labels).astype(bool)
    cams = np.asarray(cams, F32) * present[:, None, None].astype(F32)
    return cams / (cams.max(axis=(1, 2), keepdims=True) + F32(1e-5))


def _crf_with_alpha(
    cams: np.ndarray, present: np.ndarray, image_hwc: np.ndarray, alpha: float, crf: dict
) -> np.ndarray:
    """Step 3 for one alpha: Q float32 [C+1, H, W], zeros on absent classes.

    The CRF sees only [background; present classes]; its output is scattered back.
    """
    background = np.power(F32(1.0) - cams.max(axis=0), F32(alpha))[None]
    scores = np.concatenate([background, cams[present]], axis=0)
    q_present = pydensecrf_inference(scores, image_hwc, **crf)
    labels = np.concatenate([[0], np.flatnonzero(present) + 1])
    q = np.zeros((cams.shape[0] + 1,) + cams.shape[1:], F32)
    q[labels] = q_present
    return q


def sure_cam_region(
    cam_all: np.ndarray,
    low: np.ndarray,
    fg_quantile: float,
    cam_floor: float,
    bg_sure: float,
) -> np.ndarray:
    """Step 4: union of the per-class sure CAM regions, bool [H, W]."""
    cam_arg = np.argmax(cam_all, axis=0)  # ties: first maximum
    sure = np.zeros(cam_arg.shape, bool)
    for c in np.unique(low):
        s_c = np.where(cam_arg == c, cam_all[c], F32(0.0))
        if c == 0:
            sure |= s_c > F32(bg_sure)
            continue
        ordered = np.sort(s_c[s_c > F32(cam_floor)])
        if len(ordered) == 0:  # CAM never above the floor: no sure region for this class
            continue
        # int(n * q) as in RRM; clamped so fg_quantile = 1 cannot index past the end.
        t = ordered[min(int(np.floor(len(ordered) * fg_quantile)), len(ordered) - 1)]
        sure |= s_c > t
    return sure


def reliable_region_labels_ref(
    cams: np.ndarray,
    cls_labels: np.ndarray,
    image_hwc: np.ndarray,
    alpha_low: float = 4,
    alpha_high: float = 32,
    cam_alpha: float = 32,
    fg_quantile: float = 0.6,
    cam_floor: float = 0.1,
    bg_sure: float = 0.8,
    crf_sure: float = 0.8,
    ignore_index: int = 255,
    return_details: bool = False,
    crf: dict | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reliable-region labels of one image.

    Args:
        cams: [C, H, W] class activation maps (>= 0) at image size.
        cls_labels: [C] image-level labels in {0, 1}.
        image_hwc: uint8 [H, W, 3].
        crf: keyword arguments of pydensecrf_inference for both CRFs; TRAIN_CRF by default.
        return_details: also return Q_low, Q_high (float32 [C+1, H, W]) and the sure CAM
            region (bool [H, W]).

    Returns:
        labels int64 [H, W] in {0..C, ignore_index} (class c is label c+1, background 0),
        or (labels, Q_low, Q_high, sure) when return_details.
    """
    present = np.asarray(cls_labels).astype(bool)
    cams = normalized_cams(cams, cls_labels)
    background = np.power(F32(1.0) - cams.max(axis=0), F32(cam_alpha))[None]
    cam_all = np.concatenate([background, cams], axis=0)  # step 2

    image_hwc = np.ascontiguousarray(image_hwc, dtype=np.uint8)
    crf = TRAIN_CRF if crf is None else crf
    q_low = _crf_with_alpha(cams, present, image_hwc, alpha_low, crf)
    q_high = _crf_with_alpha(cams, present, image_hwc, alpha_high, crf)
    low = np.argmax(q_low, axis=0)
    high = np.argmax(q_high, axis=0)

    sure = sure_cam_region(cam_all, low, fg_quantile, cam_floor, bg_sure)

    labels = low.astype(np.int64)  # step 5
    labels[low == 0] = ignore_index
    labels[high == 0] = 0
    conf = np.concatenate([q_high[:1], q_low[1:]], axis=0).max(axis=0)  # step 6
    labels[(conf < F32(crf_sure)) | ~sure] = ignore_index
    if return_details:
        return labels, q_low, q_high, sure
    return labels
