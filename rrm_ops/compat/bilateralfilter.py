"""rloss's ``bilateralfilter`` module on rrm_ops's lattice:
``from rrm_ops.compat.bilateralfilter import bilateralfilter_batch`` replaces
``from bilateralfilter import bilateralfilter_batch``.

Both functions take flat float32 numpy arrays and write the unnormalised permutohedral filter
``out_p = Σ_q exp(−|f_p − f_q|² / 2) in_q`` (self term included) into ``out`` in place, with the
features ``f = (column / sigma_xy, row / sigma_xy, r / sigma_rgb, g / sigma_rgb, b / sigma_rgb)``
of the image. Unlike the SWIG module, all channels of all images are filtered in one pass over
one lattice build, on as many threads as torch uses, and bad arguments raise instead of
reading out of bounds.
"""

from __future__ import annotations

import numpy as np
import torch

from rrm_ops.compat._arguments import integer_at_least
from rrm_ops.lattice import Lattice, bilateral_features


def _flat_input(value: object, name: str) -> np.ndarray:
    """A 1-D input as float32 (converted like the SWIG module's input arrays), checked finite."""
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a flat (1-D) array, got shape {array.shape}; pass {name}.ravel()")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _flat_output(value: object, name: str, size: int) -> np.ndarray:
    """The in-place output: a writeable, C-contiguous, 1-D float32 numpy array of ``size`` values."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (written in place), got {type(value).__name__}")
    if value.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32 (written in place), got {value.dtype}")
    if value.ndim != 1 or value.size != size:
        raise ValueError(f"{name} must be 1-D with {size} values (the size of the input), got shape {value.shape}")
    if not value.flags.c_contiguous or not value.flags.writeable:
        raise ValueError(f"{name} must be C-contiguous and writeable (written in place)")
    return value


def _filter_into(
    images: np.ndarray, ins: np.ndarray, outs: np.ndarray, n: int, k: int, h: int, w: int, sigma_rgb: float,
    sigma_xy: float,
) -> None:
    """Filters ins [n, k, h, w] with the lattices of images [n, 3, h, w] into outs, in place."""
    image_tensor = torch.from_numpy(images).reshape(n, 3, h, w)
    lattice = Lattice(bilateral_features(image_tensor, float(np.float32(sigma_xy)), float(np.float32(sigma_rgb))))
    filtered = lattice.filter(torch.from_numpy(ins).reshape(n, k, h, w))
    torch.from_numpy(outs).reshape(n, k, h, w).copy_(filtered)


def bilateralfilter(
    image: np.ndarray, in_: np.ndarray, out: np.ndarray, H: int, W: int, sigma_rgb: float, sigma_xy: float  # noqa: N803
) -> None:
    """Filters the K = in_.size / (H·W) channels of one image into ``out`` (in place).

    Args:
        image: float32-convertible flat [3·H·W], RGB planes (0..255) of the image.
        in_: float32-convertible flat [K·H·W], the channel planes to filter.
        out: float32 numpy array [K·H·W], overwritten with the result.
        H, W: image height and width.
        sigma_rgb, sigma_xy: colour and spatial standard deviations.
    """
    h, w = integer_at_least(H, 1, "H"), integer_at_least(W, 1, "W")
    image = _flat_input(image, "image")
    values = _flat_input(in_, "in")
    if image.size != 3 * h * w:
        raise ValueError(f"image must hold 3·H·W = {3 * h * w} values, got {image.size}")
    if values.size == 0 or values.size % (h * w):
        raise ValueError(f"in must hold K·H·W values (K >= 1, H·W = {h * w}), got {values.size}")
    _filter_into(image, values, _flat_output(out, "out", values.size), 1, values.size // (h * w), h, w,
                 sigma_rgb, sigma_xy)


def bilateralfilter_batch(
    images: np.ndarray, ins: np.ndarray, outs: np.ndarray, N: int, K: int, H: int, W: int,  # noqa: N803
    sigma_rgb: float, sigma_xy: float,
) -> None:
    """Filters the K channels of each of N images into ``outs`` (in place).

    Args:
        images: float32-convertible flat [N·3·H·W], each image's RGB planes (0..255).
        ins: float32-convertible flat [N·K·H·W], each image's K channel planes.
        outs: float32 numpy array [N·K·H·W], overwritten with the result.
        N, K, H, W: batch size, channels, height, width.
        sigma_rgb, sigma_xy: colour and spatial standard deviations.
    """
    n, k, h, w = (integer_at_least(value, 1, name) for value, name in ((N, "N"), (K, "K"), (H, "H"), (W, "W")))
    images = _flat_input(images, "images")
    values = _flat_input(ins, "ins")
    if images.size != n * 3 * h * w:
        raise ValueError(f"images must hold N·3·H·W = {n * 3 * h * w} values, got {images.size}")
    if values.size != n * k * h * w:
        raise ValueError(f"ins must hold N·K·H·W = {n * k * h * w} values, got {values.size}")
    _filter_into(images, values, _flat_output(outs, "outs", values.size), n, k, h, w, sigma_rgb, sigma_xy)
