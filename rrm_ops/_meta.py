"""Fake (meta) kernels so ``torch.compile`` and FakeTensor tracing can follow the ops.

Each takes exactly the arguments of its schema (csrc/schemas.cpp), without defaults: those live
in the typed wrappers.
"""

import torch
from torch import Tensor


@torch.library.register_fake("rrm_ops::lattice_build")
def _lattice_build_fake(
    features: Tensor, point_block: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    batch, points, dim = features.shape
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


@torch.library.register_fake("rrm_ops::lattice_filter")
def _lattice_filter_fake(lattice: list[Tensor], values: Tensor, reverse: bool) -> Tensor:
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
    batch, _, pixels = cams.shape
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
    torch._check(unary.dim() == 3, lambda: f"unary must be 3-D [B, L, P], got shape {tuple(unary.shape)}")
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
    torch._check((scores is None) != (unary is None), lambda: "dense_crf takes exactly one of scores and unary")
    energies = scores if scores is not None else unary
    torch._check(energies.dim() == 4, lambda: f"scores must be 4-D [B, L, H, W], got shape {tuple(energies.shape)}")
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
    torch._check(cams.dim() == 4, lambda: f"cams must be 4-D [B, C, H, W], got shape {tuple(cams.shape)}")
    batch, classes, height, width = cams.shape
    return (
        cams.new_empty((batch, height, width), dtype=torch.int64),
        cams.new_empty((batch, height, width), dtype=torch.bool),
        cams.new_empty((2, batch, classes + 1 if return_q else 0, height, width), dtype=torch.float32),
    )
