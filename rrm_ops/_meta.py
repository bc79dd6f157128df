"""Fake (meta) kernels so ``torch.compile`` and FakeTensor tracing can follow the ops.

Each takes exactly the arguments of its schema (csrc/schemas.cpp), without defaults: those live
in the typed wrappers. Each runs the checks of its C++ op that need no data (dtypes, ranks, the
shapes the arguments must share, devices, the scalar arguments' ranges) with the same exception
and message, so a traced call fails where the real call would. The helpers below are the Python
twins of csrc/common/checks.h; tests/test_robustness.py compares each fake's errors with the op's.
"""

from __future__ import annotations

import math
from typing import Callable, NoReturn

import torch
from torch import Tensor

# The most mean-field iterations an op runs (csrc/crf/crf_ops.h: kMaxIterations).
MAX_ITERATIONS = 10_000
# The tensors of a lattice, as lattice_build returns them (csrc/lattice/lattice_ops.h: kLatticeTensors).
LATTICE_TENSORS = 6
# The largest lattice feature dimension (csrc/lattice/lattice.h: kMaxDim).
MAX_FEATURE_DIM = 16

# c10's names of the dtypes, as the C++ messages print them.
_C10_NAMES = {
    torch.float32: "Float",
    torch.float64: "Double",
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.int64: "Long",
    torch.int32: "Int",
    torch.int16: "Short",
    torch.int8: "Char",
    torch.uint8: "Byte",
    torch.bool: "Bool",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


def _dtype_name(dtype: torch.dtype) -> str:
    return _C10_NAMES.get(dtype, str(dtype))


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(size) for size in t.shape) + "]"


def _fail(kind: type[Exception], message: str) -> NoReturn:
    raise kind(message)


def _require(kind: type[Exception], condition: object, message: Callable[[], str]) -> None:
    if not condition:
        _fail(kind, message())


def _check_dim(t: Tensor, dim: int, name: str, layout: str) -> None:
    _require(ValueError, t.dim() == dim, lambda: f"{name} must be {dim}-D {layout}, got shape {_shape(t)}")


def _check_dtype(t: Tensor, dtype: torch.dtype, name: str) -> None:
    _require(TypeError, t.dtype == dtype,
             lambda: f"{name} must have dtype {_dtype_name(dtype)}, got {_dtype_name(t.dtype)}")


def _check_floating(t: Tensor, name: str) -> None:
    _require(TypeError, t.dtype in (torch.float32, torch.float64),
             lambda: f"{name} must be float32 or float64, got {_dtype_name(t.dtype)}")


def _check_same_device(a: Tensor, a_name: str, b: Tensor, b_name: str) -> None:
    _require(ValueError, a.device == b.device,
             lambda: f"{a_name} is on {a.device} but {b_name} is on {b.device}; move them to the same device")


def _number(value: float) -> str:
    """A double as C++ streams print it (6 significant digits)."""
    return f"{value:g}"


def _check_finite_number(value: float, name: str) -> None:
    _require(ValueError, math.isfinite(value), lambda: f"{name} must be a finite number, got {_number(value)}")


def _check_positive_number(value: float, name: str, wording: str = "a positive finite number") -> None:
    _require(ValueError, math.isfinite(value) and value > 0, lambda: f"{name} must be {wording}, got {_number(value)}")


def _check_iterations(n_iter: int) -> None:
    _require(ValueError, 0 <= n_iter <= MAX_ITERATIONS,
             lambda: f"n_iter must be in 0..{MAX_ITERATIONS}, got {n_iter}")


def _check_crf_params(n_iter: int, gaussian_sxy: float, gaussian_compat: float, bilateral_sxy: float,
                      bilateral_srgb: float, bilateral_compat: float) -> None:
    """check_params of csrc/crf/crf_common.cpp."""
    _check_iterations(n_iter)
    _check_positive_number(gaussian_sxy, "gaussian_sxy")
    _check_finite_number(gaussian_compat, "gaussian_compat")
    _check_positive_number(bilateral_sxy, "bilateral_sxy")
    _check_positive_number(bilateral_srgb, "bilateral_srgb")
    _check_finite_number(bilateral_compat, "bilateral_compat")


def _check_lattice_count(lattice: list[Tensor], name: str) -> None:
    """lattice_of of csrc/lattice/lattice_common.cpp."""
    _require(ValueError, len(lattice) == LATTICE_TENSORS,
             lambda: f"{name} must hold the {LATTICE_TENSORS} tensors of a lattice (offsets, weights, neighbours, "
                     f"splat_ptr, splat_entries, splat_weights), as lattice_build returns them, got {len(lattice)}")


def _check_ignore_index(ignore_index: int, classes: int) -> None:
    _require(ValueError, ignore_index < 0 or ignore_index > classes,
             lambda: f"ignore_index must not be a label (0..{classes} for C = {classes} classes), got {ignore_index}")


def _check_label_mask(label_mask: Tensor | None, batch: int, labels: int, input: Tensor, input_name: str) -> None:
    if label_mask is None:
        return
    _check_label_mask_dtype(label_mask)
    _require(ValueError, label_mask.dim() == 2 and label_mask.shape[0] == batch and label_mask.shape[1] == labels,
             lambda: f"label_mask must be [B, L] = [{batch}, {labels}], got shape {_shape(label_mask)}")
    _check_same_device(label_mask, "label_mask", input, input_name)


def _check_label_mask_dtype(label_mask: Tensor | None) -> None:
    if label_mask is not None:
        _require(TypeError, label_mask.dtype == torch.bool,
                 lambda: f"label_mask must have dtype bool, got {_dtype_name(label_mask.dtype)}")


def _check_image_dtype(image: Tensor, name: str) -> None:
    _require(TypeError, image.dtype == torch.uint8,
             lambda: f"{name} must have dtype uint8 (RGB 0..255), got {_dtype_name(image.dtype)}")


def _check_image(image: Tensor, name: str, input: Tensor, input_name: str) -> None:
    """image_channels_last of csrc/crf/crf_common.cpp."""
    batch, height, width = input.shape[0], input.shape[2], input.shape[3]
    _check_image_dtype(image, name)
    _require(ValueError, image.dim() == 4,
             lambda: f"{name} must be uint8 [B, H, W, 3] or [B, 3, H, W], got shape {_shape(image)}")
    _check_same_device(image, name, input, input_name)
    _require(ValueError, image.shape[0] == batch,
             lambda: f"{name} has batch size {image.shape[0]} but {input_name} has {batch}")
    if image.shape[1] == height and image.shape[2] == width and image.shape[3] == 3:
        return
    _require(ValueError, image.shape[1] == 3 and image.shape[2] == height and image.shape[3] == width,
             lambda: f"{name} must be [B, H, W, 3] or [B, 3, H, W] with the H x W = {height} x {width} of "
                     f"{input_name}, got shape {_shape(image)}")


def _check_prune_params(cam_alpha: float, fg_quantile: float, cam_floor: float, bg_sure: float,
                        crf_sure: float) -> None:
    """make_params of csrc/prune/prune_common.cpp."""
    _check_positive_number(cam_alpha, "cam_alpha", "a positive number")
    _require(ValueError, 0 <= fg_quantile < 1, lambda: f"fg_quantile must be in [0, 1), got {_number(fg_quantile)}")
    _require(ValueError, 0 <= cam_floor < 1, lambda: f"cam_floor must be in [0, 1), got {_number(cam_floor)}")
    _require(ValueError, 0 <= bg_sure <= 1, lambda: f"bg_sure must be in [0, 1], got {_number(bg_sure)}")
    _require(ValueError, 0 <= crf_sure <= 1, lambda: f"crf_sure must be in [0, 1], got {_number(crf_sure)}")


@torch.library.register_fake("rrm_ops::lattice_build")
def _lattice_build_fake(
    features: Tensor, point_block: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    _check_dim(features, 3, "features", "[B, P, d]")
    _check_dtype(features, torch.float32, "features")
    batch, points, dim = features.shape
    _require(RuntimeError, 1 <= dim <= MAX_FEATURE_DIM,
             lambda: f"features must have a feature dimension d in 1..{MAX_FEATURE_DIM}, got d = {dim}")
    _require(RuntimeError, point_block >= 1, lambda: f"point_block must be >= 1, got {point_block}")
    vertices = torch.library.get_ctx().new_dynamic_size()
    entries = batch * points * (dim + 1)
    return (
        features.new_empty((batch, points, dim + 1), dtype=torch.int32),
        features.new_empty((batch, points, dim + 1), dtype=torch.float32),
        features.new_empty((dim + 1, vertices, 2), dtype=torch.int32),
        features.new_empty((vertices + 1,), dtype=torch.int32),
        features.new_empty((entries,), dtype=torch.int32),
        features.new_empty((entries,), dtype=torch.float32),
    )


def _check_lattice_and_values(offsets: Tensor, values: Tensor) -> None:
    """The checks of check_filter_inputs (csrc/lattice/lattice_common.cpp) that concern values."""
    _check_dim(offsets, 3, "offsets", "[B, P, d+1]")
    _check_dim(values, 3, "values", "[B, P, C]")
    _check_floating(values, "values")
    _check_dtype(offsets, torch.int32, "offsets")
    _require(RuntimeError, values.shape[0] == offsets.shape[0] and values.shape[1] == offsets.shape[1],
             lambda: f"values must be [B, P, C] with B and P of the lattice ({offsets.shape[0]}, {offsets.shape[1]}), "
                     f"got shape {_shape(values)}")


@torch.library.register_fake("rrm_ops::lattice_filter")
def _lattice_filter_fake(lattice: list[Tensor], values: Tensor, reverse: bool) -> Tensor:
    _check_lattice_count(lattice, "lattice")
    _check_lattice_and_values(lattice[0], values)
    return torch.empty_like(values, memory_format=torch.contiguous_format)


@torch.library.register_fake("rrm_ops::prune_reliable_labels")
def _prune_reliable_labels_fake(
    cams: Tensor,
    q_low: Tensor,
    q_high: Tensor,
    cam_alpha: float,
    fg_quantile: float,
    cam_floor: float,
    bg_sure: float,
    crf_sure: float,
    ignore_index: int,
    q_labels: Tensor | None,
) -> tuple[Tensor, Tensor]:
    # checked_prune_inputs, then make_params (csrc/prune/prune_common.cpp).
    _check_dtype(cams, torch.float32, "cams")
    _check_dtype(q_low, torch.float32, "q_low")
    _check_dtype(q_high, torch.float32, "q_high")
    if q_labels is not None:
        _check_dtype(q_labels, torch.int32, "q_labels")
    _check_dim(cams, 3, "cams", "[B, C, P]")
    batch, classes, pixels = cams.shape
    _require(ValueError, classes >= 1, lambda: f"cams must have at least one class, got shape {_shape(cams)}")
    rows = classes + 1
    if q_labels is not None:
        _check_dim(q_labels, 2, "q_labels", "[B, R]")
        _require(ValueError, q_labels.shape[0] == batch and q_labels.shape[1] >= 1,
                 lambda: f"q_labels must be [B, R] with the B = {batch} of cams and R >= 1, got {_shape(q_labels)}")
        _check_same_device(q_labels, "q_labels", cams, "cams")
        rows = q_labels.shape[1]
    for q, name in ((q_low, "q_low"), (q_high, "q_high")):
        _require(ValueError, tuple(q.shape) == (batch, rows, pixels),
                 lambda: f"{name} must be [B, {'R' if q_labels is not None else 'C+1'}, P] = "
                         f"[{batch}, {rows}, {pixels}], got {_shape(q)}")
        _check_same_device(q, name, cams, "cams")
    _check_ignore_index(ignore_index, classes)
    _check_prune_params(cam_alpha, fg_quantile, cam_floor, bg_sure, crf_sure)
    return cams.new_empty((batch, pixels), dtype=torch.int64), cams.new_empty((batch, pixels), dtype=torch.bool)


@torch.library.register_fake("rrm_ops::dense_crf_meanfield")
def _dense_crf_meanfield_fake(
    unary: Tensor,
    label_mask: Tensor | None,
    gaussian: list[Tensor],
    bilateral: list[Tensor],
    gaussian_compat: float,
    bilateral_compat: float,
    n_iter: int,
    compat_matrices: Tensor | None,
) -> Tensor:
    # lattice_of, then checked_meanfield_inputs (csrc/crf/crf_common.cpp).
    _check_lattice_count(gaussian, "gaussian")
    _check_lattice_count(bilateral, "bilateral")
    _check_dtype(unary, torch.float32, "unary")
    _check_label_mask_dtype(label_mask)
    if compat_matrices is not None:
        _check_dtype(compat_matrices, torch.float32, "compat_matrices")
    _check_dim(unary, 3, "unary", "[B, L, P]")
    batch, labels, points = unary.shape
    _require(ValueError, labels >= 1,
             lambda: f"unary must have at least one label (L >= 1), got shape {_shape(unary)}")
    _check_label_mask(label_mask, batch, labels, unary, "unary")
    _check_iterations(n_iter)
    _check_finite_number(gaussian_compat, "gaussian_compat")
    _check_finite_number(bilateral_compat, "bilateral_compat")
    for offsets, name in ((gaussian[0], "gaussian"), (bilateral[0], "bilateral")):
        _require(ValueError, offsets.dim() == 3 and offsets.shape[0] == batch and offsets.shape[1] == points,
                 lambda: f"{name} lattice must be built over the B = {batch} images of P = {points} pixels of "
                         f"unary, got offsets of shape {_shape(offsets)}")
    if compat_matrices is not None:
        _require(ValueError, tuple(compat_matrices.shape) == (2, labels, labels),
                 lambda: f"compat_matrices must be [2, L, L] = [2, {labels}, {labels}], got shape "
                         f"{_shape(compat_matrices)}")
        _check_same_device(compat_matrices, "compat_matrices", unary, "unary")
    return unary.new_empty(unary.shape, dtype=torch.float32)


@torch.library.register_fake("rrm_ops::dense_crf")
def _dense_crf_fake(
    scores: Tensor | None,
    image: Tensor,
    unary: Tensor | None,
    n_iter: int,
    gaussian_sxy: float,
    gaussian_compat: float,
    bilateral_sxy: float,
    bilateral_srgb: float,
    bilateral_compat: float,
    label_mask: Tensor | None,
) -> Tensor:
    # dense_crf (csrc/crf/crf_common.cpp).
    _require(ValueError, (scores is None) != (unary is None),
             lambda: f"dense_crf takes exactly one of scores and unary, got {'neither' if scores is None else 'both'}")
    energies = scores if scores is not None else unary
    name = "scores" if scores is not None else "unary"
    _check_floating(energies, name)
    _check_image_dtype(image, "image")
    _check_label_mask_dtype(label_mask)
    _check_dim(energies, 4, name, "[B, L, H, W]")
    _require(ValueError, energies.shape[1] >= 1,
             lambda: f"{name} must have at least one label (L >= 1), got shape {_shape(energies)}")
    _check_image(image, "image", energies, name)
    _check_label_mask(label_mask, energies.shape[0], energies.shape[1], energies, name)
    _check_crf_params(n_iter, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat)
    return energies.new_empty(energies.shape, dtype=torch.float32)


@torch.library.register_fake("rrm_ops::reliable_region_labels")
def _reliable_region_labels_fake(
    cams: Tensor,
    cls_labels: Tensor,
    images: Tensor,
    alpha_low: float,
    alpha_high: float,
    n_iter: int,
    gaussian_sxy: float,
    gaussian_compat: float,
    bilateral_sxy: float,
    bilateral_srgb: float,
    bilateral_compat: float,
    cam_alpha: float,
    fg_quantile: float,
    cam_floor: float,
    bg_sure: float,
    crf_sure: float,
    ignore_index: int,
    return_q: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    # check_mining_arguments (csrc/mining/mining_common.cpp).
    _check_floating(cams, "cams")
    _require(TypeError, not cls_labels.is_complex(),
             lambda: f"cls_labels must be a real or bool tensor, got {_dtype_name(cls_labels.dtype)}")
    _check_image_dtype(images, "images")
    _check_dim(cams, 4, "cams", "[B, C, H, W]")
    batch, classes, height, width = cams.shape
    _require(ValueError, classes >= 1, lambda: f"cams must have at least one class channel, got shape {_shape(cams)}")
    _require(ValueError, cls_labels.dim() == 2 and tuple(cls_labels.shape) == (batch, classes),
             lambda: f"cls_labels must be [B, C] = [{batch}, {classes}], got shape {_shape(cls_labels)}")
    _require(ValueError, cls_labels.device.type == "cpu" or cls_labels.device == cams.device,
             lambda: f"cls_labels must be on the CPU or on {cams.device} with cams, got {cls_labels.device}")
    _check_image(images, "images", cams, "cams")
    _check_positive_number(alpha_low, "alpha_low")
    _check_positive_number(alpha_high, "alpha_high")
    _check_crf_params(n_iter, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat)
    _check_prune_params(cam_alpha, fg_quantile, cam_floor, bg_sure, crf_sure)
    _check_ignore_index(ignore_index, classes)
    return (
        cams.new_empty((batch, height, width), dtype=torch.int64),
        cams.new_empty((batch, height, width), dtype=torch.bool),
        cams.new_empty((2, batch, classes + 1 if return_q else 0, height, width), dtype=torch.float32),
    )
