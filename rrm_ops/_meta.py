"""Fake (meta) kernels so ``torch.compile`` and FakeTensor tracing can follow the ops."""

import torch
from torch import Tensor


@torch.library.register_fake("rrm_ops::lattice_build")
def _lattice_build_fake(features: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    batch, points, dim = features.shape
    vertices = torch.library.get_ctx().new_dynamic_size()
    entries = features.new_empty((batch, points, dim + 1), dtype=torch.int32)
    return (
        entries,
        features.new_empty((batch, points, dim + 1), dtype=torch.float32),
        features.new_empty((dim + 1, vertices, 2), dtype=torch.int32),
        features.new_empty((vertices + 1,), dtype=torch.int32),
        features.new_empty((batch * points * (dim + 1),), dtype=torch.int32),
    )


@torch.library.register_fake("rrm_ops::lattice_filter")
def _lattice_filter_fake(
    offsets: Tensor,
    weights: Tensor,
    neighbours: Tensor,
    splat_ptr: Tensor,
    splat_entries: Tensor,
    values: Tensor,
    reverse: bool = False,
) -> Tensor:
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
) -> tuple[Tensor, Tensor]:
    batch, _, pixels = cams.shape
    return cams.new_empty((batch, pixels), dtype=torch.int64), cams.new_empty((batch, pixels), dtype=torch.bool)
