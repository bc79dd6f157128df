"""RRM's gated dense-CRF energy loss (docs/design.md#dense-energy-loss).

The loss is plain tensor code around the registered lattice ops: all images of a batch share
one lattice build (their vertices never mix), all K channels are filtered in one pass, and the
``"rrm"`` backward reuses the forward's ``A`` so it filters nothing.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from rrm_ops._library import runs_on_host
from rrm_ops.lattice import Lattice, bilateral_features

Gradient = Literal["rrm", "exact"]

# How far probs may leave [0, 1], and their sum over K leave 1, before the checks react.
PROB_TOLERANCE = 1e-2
# How far images may leave 0..255 (rounding after un-normalising) before the check reacts.
INTENSITY_TOLERANCE = 0.5
IGNORE_LABEL = 255


class _GatedEnergy(torch.autograd.Function):
    """``-scale · Σ S' ⊙ gate ⊙ W(S')`` with ``S' = probs ⊙ rois``, all in points layout.

    Inputs: probs [N, P, K], rois [N, P, 1], gate [N, P, 1] (a constant), scale = weight / N,
    exact (which backward), the lattice filter op, then the lattice tensors. Returns a 0-d tensor.
    """

    @staticmethod
    def forward(
        ctx, probs: Tensor, rois: Tensor, gate: Tensor, scale: float, exact: bool, lattice_filter, *lattice: Tensor
    ) -> Tensor:
        masked = probs * rois
        energy_a = lattice_filter(lattice, masked, False).mul_(gate)
        # Summing over the points first gives one sum per (image, class), each taken by one
        # thread; a plain sum() splits the whole array among the threads, so its rounding
        # would depend on their number.
        loss = (masked * energy_a).sum(dim=1).sum() * -scale
        if exact:
            ctx.save_for_backward(energy_a, rois, masked, gate, *lattice)
        else:
            ctx.save_for_backward(energy_a, rois)
        ctx.scale = scale
        ctx.exact = exact
        ctx.lattice_filter = lattice_filter
        ctx.lattice_tensors = len(lattice)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.exact:
            # d/dS' of S'ᵀ G W S' is G W S' + Wᵀ G S'; W is not exactly symmetric, and its
            # transpose is the filter with the blur axes in reverse order.
            energy_a, rois, masked, gate, *lattice = ctx.saved_tensors
            transposed = ctx.lattice_filter(lattice, masked * gate, True)
            grad_probs = (energy_a + transposed).mul_(rois).mul_(grad_loss * -ctx.scale)
        else:
            # RRM's rule: treat W as symmetric, which makes the gradient 2 A and needs no filtering.
            energy_a, rois = ctx.saved_tensors
            grad_probs = (energy_a * rois).mul_(grad_loss * (-2.0 * ctx.scale))
        return (grad_probs,) + (None,) * (5 + ctx.lattice_tensors)


def gated_dense_energy(
    lattice: Lattice,
    probs: Tensor,
    rois: Tensor,
    gate: Tensor,
    weight: float = 1e-7,
    gradient: Gradient = "rrm",
) -> Tensor:
    """Steps 3-5 of docs/design.md#dense-energy-loss at the lattice's resolution (no downscaling, no checks).

    ``loss = -weight · Σ S' ⊙ A / N`` with ``S' = probs ⊙ rois`` and ``A = gate ⊙ W(S')``, W the
    unnormalised lattice filter. Backward w.r.t. probs: ``-2 · weight · A ⊙ rois / N`` for
    ``gradient="rrm"``; the true gradient with the gate held constant for ``"exact"``.

    Args:
        lattice: built over the N images' features, h·w points each.
        probs: float32/float64 [N, K, h, w], the (downscaled) softmax S.
        rois: [N, h, w] of the dtype of probs.
        gate: [N, h, w] of the dtype of probs; a constant (no gradient flows into it).
        weight: loss weight.
        gradient: ``"rrm"`` or ``"exact"``.

    Returns:
        0-d tensor of the dtype of probs.
    """
    n, k, h, w = probs.shape
    scale = weight / n if n > 0 else 0.0
    points = probs.permute(0, 2, 3, 1).reshape(n, h * w, k).contiguous()
    return _GatedEnergy.apply(
        points,
        rois.reshape(n, h * w, 1),
        gate.detach().reshape(n, h * w, 1),
        scale,
        gradient == "exact",
        lattice.ops.lattice_filter,
        *lattice.tensors.as_tuple(),
    )


def energy_gate(probs: Tensor, rois: Tensor, seg_label: Tensor) -> Tensor:
    """RRM's gate ``max(rois - max_k probs, 0)``, and 1 where seg_label is 255.

    Args:
        probs: [N, K, h, w]; rois: [N, h, w]; seg_label: [N, h, w] (any real dtype).

    Returns:
        [N, h, w] of the dtype of probs, in [0, 1] for probs and rois in [0, 1].
    """
    gate = rois - probs.amax(dim=1)
    gate = torch.where(seg_label == IGNORE_LABEL, torch.ones_like(gate), gate)
    return gate.clamp_min(0)


def dense_energy_loss(
    images: Tensor,
    probs: Tensor,
    rois: Tensor,
    seg_label: Tensor | None,
    weight: float = 1e-7,
    sigma_rgb: float = 15.0,
    sigma_xy: float = 100.0,
    scale_factor: float = 0.5,
    gradient: Gradient = "rrm",
    gate: bool = True,
    check_values: bool | None = None,
) -> Tensor:
    """RRM's gated dense-CRF energy loss (docs/design.md#dense-energy-loss); see :class:`DenseEnergyLoss`.

    Args:
        images: [N, 3, H, W] RGB intensities in 0..255 (any real dtype; not mean/std normalised).
        probs: [N, K, H, W] softmax probabilities, any float dtype. float64 is computed in
            float64, every other dtype in float32.
        rois: [N, H, W] 1 inside the valid crop, 0 outside (any real or bool dtype).
        seg_label: [N, 1, H, W] reliable labels, 255 = unreliable (the gate is 1 there). Unused,
            and may be None, when ``gate=False``.
        weight, sigma_rgb, sigma_xy, scale_factor, gradient, gate, check_values: see
            :class:`DenseEnergyLoss`.

    Returns:
        0-d loss tensor (float64 for float64 probs, else float32), differentiable w.r.t. probs.
    """
    _check_settings(weight, sigma_rgb, sigma_xy, scale_factor, gradient)
    if gate and seg_label is None:
        raise ValueError("seg_label is required when gate=True (it marks where the gate is 1)")
    _check_shapes(images, probs, rois, seg_label if gate else None, scale_factor)
    if check_values if check_values is not None else runs_on_host(probs.device):
        _check_values(images, probs, rois)

    dtype = torch.float64 if probs.dtype == torch.float64 else torch.float32
    if probs.shape[0] == 0:
        return probs.to(dtype).sum()

    small_probs = F.interpolate(probs.to(dtype), scale_factor=scale_factor, mode="bilinear", align_corners=False)
    small_images = F.interpolate(images.detach().float(), scale_factor=scale_factor, mode="nearest")
    small_rois = F.interpolate(rois[:, None].to(dtype), scale_factor=scale_factor, mode="nearest")[:, 0]
    if gate:
        small_seg = F.interpolate(seg_label.float(), scale_factor=scale_factor, mode="nearest")[:, 0]
        gate_map = energy_gate(small_probs.detach(), small_rois, small_seg)
    else:
        gate_map = torch.ones_like(small_rois)
    lattice = Lattice(bilateral_features(small_images, sigma_xy * scale_factor, sigma_rgb))
    return gated_dense_energy(lattice, small_probs, small_rois, gate_map, weight, gradient)


class DenseEnergyLoss(nn.Module):
    """RRM's gated dense-CRF energy loss (docs/design.md#dense-energy-loss), as RRM trained with it.

    ``forward(images, probs, rois, seg_label)`` downscales by ``scale_factor`` (images, rois and
    seg_label nearest, probs bilinear), computes ``gate = max(roi - max_k S_k, 0)`` (1 where
    seg_label is 255), ``S' = S ⊙ roi``, ``A = gate ⊙ W(S')`` with W the bilateral lattice filter
    on (x, y)/(sigma_xy·scale_factor) and rgb/sigma_rgb, and returns
    ``-weight · Σ S' ⊙ A / N``. The gate is a constant in both gradient modes.

    Args:
        weight: loss weight (RRM: 1e-7).
        sigma_rgb: colour standard deviation in intensity levels (RRM: 15).
        sigma_xy: spatial standard deviation in full-resolution pixels (RRM: 100).
        scale_factor: downscaling factor in (0, 1] (RRM: 0.5).
        gradient: ``"rrm"`` (RRM's ``-2 · weight · A ⊙ roi / N``, no filtering in backward) or
            ``"exact"`` (the true gradient, one transposed filtering in backward).
        gate: False gives the plain dense-CRF loss (gate = 1; rois only; seg_label unused).
            A call without seg_label, ``forward(images, probs, rois)`` (rloss's ``DenseCRFLoss``
            call), also gives the plain loss.
        check_values: check input values (probs finite and in [0, 1] within ``PROB_TOLERANCE``,
            rois in [0, 1], images in 0..255 within ``INTENSITY_TOLERANCE``: ``ValueError``
            otherwise; probs summing over K to 1 beyond ``PROB_TOLERANCE``, or images all
            within 0..1: ``UserWarning``, the loss is still computed). None (default) checks CPU
            inputs only, because on CUDA a check is a device-to-host round trip.

    Shapes: images [N, 3, H, W]; probs [N, K, H, W]; rois [N, H, W]; seg_label [N, 1, H, W] or
    None.
    Returns a 0-d tensor. Batch items are independent; the result is the mean over them.
    """

    def __init__(
        self,
        weight: float = 1e-7,
        sigma_rgb: float = 15.0,
        sigma_xy: float = 100.0,
        scale_factor: float = 0.5,
        gradient: Gradient = "rrm",
        gate: bool = True,
        check_values: bool | None = None,
    ) -> None:
        super().__init__()
        _check_settings(weight, sigma_rgb, sigma_xy, scale_factor, gradient)
        self.weight = float(weight)
        self.sigma_rgb = float(sigma_rgb)
        self.sigma_xy = float(sigma_xy)
        self.scale_factor = float(scale_factor)
        self.gradient = gradient
        self.gate = gate
        self.check_values = check_values

    def forward(self, images: Tensor, probs: Tensor, rois: Tensor, seg_label: Tensor | None = None) -> Tensor:
        return dense_energy_loss(
            images,
            probs,
            rois,
            seg_label,
            weight=self.weight,
            sigma_rgb=self.sigma_rgb,
            sigma_xy=self.sigma_xy,
            scale_factor=self.scale_factor,
            gradient=self.gradient,
            gate=self.gate and seg_label is not None,
            check_values=self.check_values,
        )

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, "
            f"scale_factor={self.scale_factor}, gradient={self.gradient!r}, gate={self.gate}"
        )


def _check_settings(weight: float, sigma_rgb: float, sigma_xy: float, scale_factor: float, gradient: str) -> None:
    if not math.isfinite(weight):
        raise ValueError(f"weight must be finite, got {weight}")
    for name, sigma in (("sigma_rgb", sigma_rgb), ("sigma_xy", sigma_xy)):
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"{name} must be a positive finite number, got {sigma}")
    if not 0 < scale_factor <= 1:
        raise ValueError(f"scale_factor must be in (0, 1], got {scale_factor}")
    if gradient not in ("rrm", "exact"):
        raise ValueError(f"gradient must be 'rrm' or 'exact', got {gradient!r}")


def _check_shapes(
    images: Tensor, probs: Tensor, rois: Tensor, seg_label: Tensor | None, scale_factor: float
) -> None:
    """Checks types, shapes and devices (no data access, so no device sync)."""
    named = {"images": images, "probs": probs, "rois": rois}
    if seg_label is not None:
        named["seg_label"] = seg_label
    for name, tensor in named.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.is_complex():
            raise TypeError(f"{name} must be real, got dtype {tensor.dtype}")
        if tensor.device != probs.device:
            raise ValueError(f"{name} is on {tensor.device} but probs is on {probs.device}; move them to one device")
    if not probs.is_floating_point():
        raise TypeError(f"probs must be a floating tensor, got dtype {probs.dtype}")
    if probs.dim() != 4 or probs.shape[1] < 1:
        raise ValueError(f"probs must be [N, K, H, W] with K >= 1, got shape {tuple(probs.shape)}")
    n, _, height, width = probs.shape
    expected = {"images": (n, 3, height, width), "rois": (n, height, width), "seg_label": (n, 1, height, width)}
    for name in named.keys() - {"probs"}:
        if tuple(named[name].shape) != expected[name]:
            raise ValueError(
                f"{name} must have shape {list(expected[name])} to match probs [N, K, H, W] = "
                f"{list(probs.shape)}, got {list(named[name].shape)}"
            )
    if n > 0 and (math.floor(height * scale_factor) < 1 or math.floor(width * scale_factor) < 1):
        raise ValueError(f"scale_factor {scale_factor} shrinks the {height}x{width} input to nothing")


def _check_values(images: Tensor, probs: Tensor, rois: Tensor) -> None:
    """Checks input values (reads them: a device sync on CUDA). See DenseEnergyLoss.check_values.

    The range tests are written so that NaN fails them.
    """
    if probs.numel() == 0:
        return
    low, high = (value.item() for value in torch.aminmax(probs.float()))
    if not (low >= -PROB_TOLERANCE and high <= 1 + PROB_TOLERANCE):
        raise ValueError(
            f"probs must be finite probabilities in [0, 1] (a softmax over K), got range [{low:g}, {high:g}]"
        )
    deviation = (probs.float().sum(dim=1) - 1).abs().max().item()
    if deviation > PROB_TOLERANCE:
        warnings.warn(
            f"probs do not sum to 1 over K (largest deviation {deviation:g}); the loss expects a softmax "
            "over all classes and is computed as given",
            UserWarning,
            stacklevel=3,
        )
    low, high = (value.item() for value in torch.aminmax(rois.float()))
    if not (low >= 0 and high <= 1):
        raise ValueError(f"rois must be in [0, 1] (1 inside the valid crop, 0 outside), got range [{low:g}, {high:g}]")
    low, high = (value.item() for value in torch.aminmax(images.float()))
    if not (low >= -INTENSITY_TOLERANCE and high <= 255 + INTENSITY_TOLERANCE):
        raise ValueError(
            f"images must be finite RGB intensities in 0..255 (undo any mean/std normalisation), got range "
            f"[{low:g}, {high:g}]"
        )
    if high <= 1:
        warnings.warn(
            "images are all within 0..1; the loss expects intensities in 0..255 (sigma_rgb is in those units)",
            UserWarning,
            stacklevel=3,
        )
