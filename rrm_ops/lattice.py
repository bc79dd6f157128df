"""Permutohedral-lattice bilateral filtering (docs/design.md#permutohedral-lattice)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from rrm_ops._library import LIBRARY, ops

Normalize = Literal["none", "symmetric"]


@dataclass(frozen=True)
class LatticeTensors:
    """The tensors of a built lattice: lattice_build's outputs, which the ops that use a lattice
    take back as one ``Tensor[]`` argument (:meth:`as_tuple`).

    offsets: int32 [B, P, d+1] global vertex id of each point's simplex vertices.
    weights: float32 [B, P, d+1] barycentric weights.
    neighbours: int32 [d+1, M, 2] blur neighbours of each vertex per axis (-1 if absent).
    splat_ptr: int32 [M+1] and splat_entries: int32 [B*P*(d+1)] the vertex -> entries CSR
        (each vertex's entries in ascending order).
    splat_weights: float32 [B*P*(d+1)] the weights of splat_entries, in CSR order.
    """

    offsets: Tensor
    weights: Tensor
    neighbours: Tensor
    splat_ptr: Tensor
    splat_entries: Tensor
    splat_weights: Tensor

    def as_tuple(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The lattice as the ops' ``Tensor[]`` argument, in lattice_build's order."""
        return (self.offsets, self.weights, self.neighbours, self.splat_ptr, self.splat_entries, self.splat_weights)

    @property
    def num_vertices(self) -> int:
        return self.splat_ptr.shape[0] - 1


def _points_last(x: Tensor, name: str) -> tuple[Tensor, tuple[int, int] | None]:
    """[B, K, H, W] -> ([B, H*W, K] view, (H, W)); [B, P, K] passes through.

    A contiguous [B, K, H, W] tensor becomes a [B, P, K] view of its channel planes, which the
    filter reads without a copy.
    """
    if x.dim() == 4:
        b, k, h, w = x.shape
        return x.reshape(b, k, h * w).transpose(1, 2), (h, w)
    if x.dim() == 3:
        return x, None
    raise ValueError(f"{name} must be [B, P, K] or [B, K, H, W], got shape {tuple(x.shape)}")


class Lattice:
    """A permutohedral lattice built once over a batch of feature sets and reused for filtering.

    Args:
        features: float [B, P, d] or [B, d, H, W], already divided by their standard
            deviations (see :func:`bilateral_features`), d in 1..16. Cast to float32.
        point_block: each item's points are padded with zero-feature points to a multiple of
            point_block (>= 1); their vertices join the lattice and its blur, and nothing is
            splatted at or sliced for them. 1 (the default) is the plain lattice; pydensecrf's
            x86 build embeds points in blocks of 4, so its filters are this lattice's with 4.

    ``filter`` computes, per batch item, the permutohedral approximation of
    ``out_p = sum_q exp(-|f_p - f_q|^2 / 2) v_q`` used by dense-CRF code (self term included).
    """

    def __init__(self, features: Tensor, point_block: int = 1) -> None:
        if not isinstance(features, Tensor):
            raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
        if not features.is_floating_point():
            raise TypeError(f"features must be a floating tensor, got dtype {features.dtype}")
        points, self.spatial_size = _points_last(features, "features")
        self.batch, self.num_points, self.dim = points.shape
        self.device = features.device
        # The op library that builds the lattice also filters with it.
        self.ops = ops()
        self.tensors = LatticeTensors(*self.ops.lattice_build(points.float().contiguous(), int(point_block)))
        self._norm: dict[torch.dtype, Tensor] = {}

    def filter(self, values: Tensor, normalize: Normalize = "none", reverse: bool = False) -> Tensor:
        """Filter values with the lattice.

        Args:
            values: float32/float64 [B, P, C] or [B, C, H, W] (same B and P as the features).
            normalize: ``"none"``, or ``"symmetric"`` for ``n * filter(n * v)`` with
                ``n = 1 / sqrt(filter(1) + 1e-20)``.
            reverse: blur the lattice axes in reverse order, which gives the transpose of the
                (not exactly symmetric) filter matrix.

        Returns:
            Tensor of the shape and dtype of ``values``. Differentiable w.r.t. ``values``.
        """
        if normalize not in ("none", "symmetric"):
            raise ValueError(f"normalize must be 'none' or 'symmetric', got {normalize!r}")
        if not isinstance(values, Tensor) or not values.is_floating_point():
            dtype = values.dtype if isinstance(values, Tensor) else type(values).__name__
            raise TypeError(f"values must be a float32 or float64 tensor, got {dtype}")
        if values.device != self.device:
            raise ValueError(
                f"values is on {values.device} but the lattice was built on {self.device}; "
                "move them to the same device"
            )
        flat, spatial = _points_last(values, "values")
        if spatial is not None and spatial[0] * spatial[1] != self.num_points:
            raise ValueError(
                f"values has {spatial[0]}x{spatial[1]} pixels but the lattice has {self.num_points} points"
            )
        if normalize == "symmetric":
            norm = self.symmetric_norm(flat.dtype)
            out = norm * self._filter_points(norm * flat, reverse)
        else:
            out = self._filter_points(flat, reverse)
        if spatial is None:
            return out
        b, c = values.shape[:2]
        return out.reshape(b, spatial[0], spatial[1], c).permute(0, 3, 1, 2)

    def symmetric_norm(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """``1 / sqrt(filter(1) + 1e-20)`` as [B, P, 1], computed once per dtype."""
        if dtype not in self._norm:
            ones = torch.ones(self.batch, self.num_points, 1, dtype=dtype, device=self.device)
            self._norm[dtype] = torch.rsqrt(self._filter_points(ones, False) + 1e-20)
        return self._norm[dtype]

    def _filter_points(self, values: Tensor, reverse: bool) -> Tensor:
        return self.ops.lattice_filter(self.tensors.as_tuple(), values, reverse)


def _lattice_filter_setup_context(ctx, inputs, output) -> None:
    ctx.lattice, _, ctx.reverse = inputs


def register_lattice_filter_autograd(library: str) -> None:
    """Registers the gradient of ``<library>::lattice_filter``: the filter with the blur axes in
    reverse order, which is its transpose."""
    op = getattr(torch.ops, library).lattice_filter

    def backward(ctx, grad: Tensor):
        grad_values = op(ctx.lattice, grad, not ctx.reverse)
        # The lattice's gradient has its structure: a list of one None per tensor.
        return [None] * len(ctx.lattice), grad_values, None

    torch.library.register_autograd(
        f"{library}::lattice_filter", backward, setup_context=_lattice_filter_setup_context
    )


register_lattice_filter_autograd(LIBRARY)


def _image_channels_first(image: Tensor) -> Tensor:
    """uint8 [B, H, W, 3] or [B, 3, H, W] (any dtype) -> float32 [B, 3, H, W]."""
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() != 4:
        raise ValueError(f"image must be [B, 3, H, W] or uint8 [B, H, W, 3], got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8 and image.shape[-1] == 3:
        image = image.permute(0, 3, 1, 2)
    elif image.shape[1] != 3:
        raise ValueError(f"image must be [B, 3, H, W] or uint8 [B, H, W, 3], got shape {tuple(image.shape)}")
    return image.float()


def _check_sigma(value: float, name: str) -> float:
    value = float(value)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def gaussian_features(
    batch: int, height: int, width: int, sigma_xy: float, device: torch.device | str | None = None
) -> Tensor:
    """Position features (x / sigma_xy, y / sigma_xy) as float32 [B, 2, H, W]; x is the column."""
    sigma_xy = _check_sigma(sigma_xy, "sigma_xy")
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device),
        torch.arange(width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return (torch.stack([xs, ys]) / sigma_xy).unsqueeze(0).expand(batch, 2, height, width).contiguous()


def bilateral_features(image: Tensor, sigma_xy: float, sigma_rgb: float) -> Tensor:
    """Bilateral features (x/σxy, y/σxy, r/σrgb, g/σrgb, b/σrgb) as float32 [B, 5, H, W].

    Args:
        image: [B, 3, H, W] (any real dtype, values 0..255) or uint8 [B, H, W, 3].
        sigma_xy: spatial standard deviation in pixels.
        sigma_rgb: colour standard deviation in intensity levels.
    """
    sigma_rgb = _check_sigma(sigma_rgb, "sigma_rgb")
    rgb = _image_channels_first(image)
    b, _, h, w = rgb.shape
    xy = gaussian_features(b, h, w, sigma_xy, device=rgb.device)
    return torch.cat([xy, rgb / sigma_rgb], dim=1)
