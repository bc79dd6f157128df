"""pydensecrf's ``utils``: unaries from probabilities or labels, features for custom terms.

Each function returns what pydensecrf's returns (float32 arrays, labels or feature rows first)
and computes it with the same numpy operations, so the results are bitwise the same.
"""

from __future__ import annotations

from numbers import Number
from typing import Sequence

import numpy as np


def unary_from_softmax(sm: np.ndarray, scale: float | None = None, clip: float | None = 1e-5) -> np.ndarray:
    """Unary energies ``−log p`` of probabilities.

    Args:
        sm: probabilities [L, ...] (labels first; the other axes are flattened), finite.
        scale: if given, in (0, 1]: p = scale · sm + (1 − scale) / L, a softened classifier.
        clip: p is clipped to [clip, 1] first (None: no clipping).

    Returns:
        float32 [L, prod(...)]; the log is taken in the dtype of p.
    """
    probabilities = np.asarray(sm)
    if probabilities.ndim < 1 or probabilities.shape[0] < 1:
        raise ValueError(f"sm must be [L, ...] with L >= 1 labels first, got shape {probabilities.shape}")
    if not np.isfinite(probabilities).all():
        raise ValueError("sm contains NaN or infinite values")
    labels = probabilities.shape[0]
    if scale is not None:
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        # The uniform share is a float64 array in pydensecrf, which makes the sum float64.
        probabilities = scale * probabilities + np.full(probabilities.shape, 1.0 / labels) * (1 - scale)
    if clip is not None:
        probabilities = np.clip(probabilities, clip, 1.0)
    return (-np.log(probabilities)).reshape([labels, -1]).astype(np.float32)


def unary_from_labels(labels: np.ndarray, n_labels: int, gt_prob: float, zero_unsure: bool = True) -> np.ndarray:
    """Unary energies of a label map, trusting each annotation with probability gt_prob.

    Args:
        labels: integer label map of any shape. With ``zero_unsure`` (default) 0 means
            "unknown" (uniform energies) and labels run 1..n_labels; otherwise 0..n_labels − 1.
        n_labels: number of labels L >= 2 (not counting the "unknown" 0).
        gt_prob: probability in (0, 1) of the annotated label; the others share the rest.

    Returns:
        float32 [L, labels.size].
    """
    if not 0 < gt_prob < 1:
        raise ValueError(f"gt_prob must be in (0, 1), got {gt_prob}")
    if isinstance(n_labels, bool) or not isinstance(n_labels, (int, np.integer)) or n_labels < 2:
        raise ValueError(f"n_labels must be an integer >= 2, got {n_labels!r}")
    flat = np.asarray(labels).reshape(-1)
    if not np.issubdtype(flat.dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got dtype {flat.dtype}")
    low, high = (1, n_labels) if zero_unsure else (0, n_labels - 1)
    annotated = flat[flat != 0] if zero_unsure else flat
    if annotated.size and (annotated.min() < low or annotated.max() > high):
        raise ValueError(
            f"labels must be in {0 if zero_unsure else low}..{high}"
            f"{' (0 = unknown)' if zero_unsure else ''}, got {annotated.min()}..{annotated.max()}"
        )
    energies = np.full((n_labels, flat.size), -np.log((1.0 - gt_prob) / (n_labels - 1)), dtype=np.float32)
    energies[flat - 1 if zero_unsure else flat, np.arange(flat.size)] = -np.log(gt_prob)
    if zero_unsure:
        energies[:, flat == 0] = -np.log(1.0 / n_labels)
    return energies


def _scaled_grid(sdims: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """float32 [len(shape), *shape]: each point's index along every axis, divided by sdims."""
    if len(sdims) != len(shape):
        raise ValueError(f"sdims must give one scale per axis of shape {tuple(shape)}, got {tuple(sdims)}")
    grid = np.indices(tuple(shape), dtype=np.float32)
    for axis, scale in enumerate(sdims):
        grid[axis] /= scale
    return grid


def create_pairwise_gaussian(sdims: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """Position features for ``addPairwiseEnergy``: float32 [len(shape), prod(shape)], the
    index along axis i divided by sdims[i] (for an image: (row / sy, column / sx))."""
    grid = _scaled_grid(sdims, shape)
    return grid.reshape([len(sdims), -1])


def create_pairwise_bilateral(
    sdims: Sequence[float], schan: float | Sequence[float], img: np.ndarray, chdim: int = -1
) -> np.ndarray:
    """Position and channel features for ``addPairwiseEnergy``.

    Args:
        sdims: one scale per spatial axis of img.
        schan: one scale for all channels, or one per channel.
        img: the image; its channel axis is ``chdim``, or it has none (``chdim=-1``).

    Returns:
        float32 [len(sdims) + channels, pixels]: the scaled positions, then the scaled channels.
    """
    image = np.asarray(img)
    channels = image[np.newaxis] if chdim == -1 else np.moveaxis(image, chdim, 0)
    channels = channels.astype(np.float32)
    if isinstance(schan, Number):
        channels /= schan
    else:
        if len(schan) != channels.shape[0]:
            raise ValueError(f"schan must give one scale per channel ({channels.shape[0]}), got {tuple(schan)}")
        for channel, scale in enumerate(schan):
            channels[channel] /= scale
    features = np.concatenate([_scaled_grid(sdims, channels.shape[1:]), channels])
    return features.reshape([features.shape[0], -1])
