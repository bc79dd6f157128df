"""Dense CRF mean-field inference (docs/design.md#dense-crf), equal to pydensecrf's to float rounding.

:func:`dense_crf` is the one-call entry point. :func:`crf_lattices` and :func:`mean_field` split
it in two for callers that run several CRFs on one image (reliable-region mining runs two
background strengths): the two lattices are built once and reused. :data:`TRAINING_CRF` and
:data:`INFERENCE_CRF` are the two settings RRM uses; every default below comes from the first.

None of these functions is differentiable; inputs are detached.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from rrm_ops._library import ops
from rrm_ops.lattice import Lattice, bilateral_features, gaussian_features

# pydensecrf's x86 build (its SSE path, the one pip installs) embeds points in blocks of four.
PYDENSECRF_POINT_BLOCK = 4


@dataclass(frozen=True)
class CrfParams:
    """The parameters of a dense CRF (see :func:`dense_crf`), named and ordered as the ops take them.

    n_iter: mean-field iterations, >= 0.
    gaussian_sxy, gaussian_compat: the Gaussian kernel's width in pixels (> 0) and Potts weight.
    bilateral_sxy, bilateral_srgb, bilateral_compat: the bilateral kernel's widths in pixels and
        intensity levels (> 0) and its Potts weight.

    ``dense_crf(scores, image, **params.as_kwargs())`` runs the CRF; ``dataclasses.replace``
    derives a variant.
    """

    n_iter: int
    gaussian_sxy: float
    gaussian_compat: float
    bilateral_sxy: float
    bilateral_srgb: float
    bilateral_compat: float

    def as_kwargs(self) -> dict[str, int | float]:
        """The fields as keyword arguments of :func:`dense_crf`."""
        return dataclasses.asdict(self)

    def as_op_arguments(self) -> tuple[int, float, float, float, float, float]:
        """The fields in the schemas' order, ``n_iter`` an int and the rest floats."""
        return (int(self.n_iter), float(self.gaussian_sxy), float(self.gaussian_compat), float(self.bilateral_sxy),
                float(self.bilateral_srgb), float(self.bilateral_compat))


TRAINING_CRF = CrfParams(
    n_iter=10, gaussian_sxy=3.0, gaussian_compat=3.0, bilateral_sxy=80.0, bilateral_srgb=13.0, bilateral_compat=10.0
)
"""RRM's training-time CRF: the two CRFs of reliable-region mining (its default) and the default
of :func:`dense_crf`, :func:`crf_lattices` and :func:`mean_field`. Gaussian sxy 3, compat 3;
bilateral sxy 80, srgb 13, compat 10; 10 iterations."""

INFERENCE_CRF = CrfParams(
    n_iter=10, gaussian_sxy=3.0, gaussian_compat=3.0, bilateral_sxy=83.0, bilateral_srgb=5.0, bilateral_compat=4.0
)
"""RRM's inference-time CRF (its infer script), which refines test-time predictions: Gaussian
sxy 3, compat 3; bilateral sxy 83, srgb 5, compat 4; 10 iterations."""


def _tensor(value: object, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value.detach()


def _optional_tensor(value: object, name: str) -> Tensor | None:
    return None if value is None else _tensor(value, name)


def dense_crf(
    scores: Tensor | None = None,
    image: Tensor | None = None,
    *,
    unary: Tensor | None = None,
    n_iter: int = TRAINING_CRF.n_iter,
    gaussian_sxy: float = TRAINING_CRF.gaussian_sxy,
    gaussian_compat: float = TRAINING_CRF.gaussian_compat,
    bilateral_sxy: float = TRAINING_CRF.bilateral_sxy,
    bilateral_srgb: float = TRAINING_CRF.bilateral_srgb,
    bilateral_compat: float = TRAINING_CRF.bilateral_compat,
    label_mask: Tensor | None = None,
) -> Tensor:
    """Dense CRF mean field, as pydensecrf's ``DenseCRF2D`` with ``unary_from_softmax``, a
    Gaussian and a bilateral Potts kernel (both symmetric-normalised) and ``inference(n_iter)``.

    Computes ``Q⁰ = softmax(−U)`` then ``n_iter`` times
    ``Q = softmax(−U + w_g n_g ⊙ k_g(n_g ⊙ Q) + w_b n_b ⊙ k_b(n_b ⊙ Q))`` with ``k_g`` the
    permutohedral Gaussian filter on ``(x, y) / gaussian_sxy`` and ``k_b`` on
    ``((x, y) / bilateral_sxy, rgb / bilateral_srgb)`` (x is the column), ``n_k = 1 / sqrt(k(1))``
    and ``w`` the compat weights. Each image has its own lattices. The CRF parameters default
    to :data:`TRAINING_CRF`; ``dense_crf(scores, image, **INFERENCE_CRF.as_kwargs())`` runs
    RRM's inference CRF.

    Args:
        scores: float32/float64 [B, L, H, W], probabilities >= 0 (need not sum to 1);
            ``U = −log(clip(scores, 1e-5, 1))``, so values above 1 act as 1. None (or left
            out) when ``unary`` is given: ``dense_crf(unary=u, image=img)``.
        image: uint8 [B, H, W, 3] or [B, 3, H, W], RGB 0..255 (a [B, 3, 3, 3] image is read as
            [B, H, W, 3]).
        unary: float32/float64 [B, L, H, W], finite negative log-probabilities, given instead
            of ``scores``.
        n_iter: mean-field iterations, >= 0 (0 returns the unary softmax).
        gaussian_sxy, bilateral_sxy, bilateral_srgb: kernel widths, > 0.
        gaussian_compat, bilateral_compat: Potts weights.
        label_mask: bool [B, L]; a False label is absent: its Q is exactly 0 and the others
            equal a CRF run on the present labels alone. An image with no present label gets
            Q = 0 everywhere.

    Returns:
        Q float32 [B, L, H, W], summing to 1 over the present labels of each pixel.
    """
    if image is None:
        raise TypeError("dense_crf() needs the image: dense_crf(scores, image) or dense_crf(unary=u, image=image)")
    return ops().dense_crf(
        _optional_tensor(scores, "scores"),
        _tensor(image, "image"),
        _optional_tensor(unary, "unary"),
        int(n_iter),
        float(gaussian_sxy),
        float(gaussian_compat),
        float(bilateral_sxy),
        float(bilateral_srgb),
        float(bilateral_compat),
        _optional_tensor(label_mask, "label_mask"),
    )


@dataclass(frozen=True)
class CrfLattices:
    """The two lattices of a batch of images, built once for any number of mean-field runs.

    gaussian: d = 2 lattice on (x, y) / gaussian_sxy.
    bilateral: d = 5 lattice on ((x, y) / bilateral_sxy, rgb / bilateral_srgb).
    height, width: the image size.
    """

    gaussian: Lattice
    bilateral: Lattice
    height: int
    width: int


def crf_lattices(
    image: Tensor,
    *,
    gaussian_sxy: float = TRAINING_CRF.gaussian_sxy,
    bilateral_sxy: float = TRAINING_CRF.bilateral_sxy,
    bilateral_srgb: float = TRAINING_CRF.bilateral_srgb,
) -> CrfLattices:
    """Build the Gaussian and bilateral lattices of ``image`` (uint8 [B, H, W, 3] or [B, 3, H, W]),
    as :func:`dense_crf` and pydensecrf do (points in blocks of 4, see :class:`Lattice`)."""
    image = _tensor(image, "image")
    if image.dtype != torch.uint8:
        raise TypeError(f"image must have dtype uint8 (RGB 0..255), got {image.dtype}")
    features = bilateral_features(image, bilateral_sxy, bilateral_srgb)
    batch, _, height, width = features.shape
    return CrfLattices(
        gaussian=Lattice(
            gaussian_features(batch, height, width, gaussian_sxy, device=image.device),
            point_block=PYDENSECRF_POINT_BLOCK,
        ),
        bilateral=Lattice(features, point_block=PYDENSECRF_POINT_BLOCK),
        height=height,
        width=width,
    )


def unary_from_scores(scores: Tensor) -> Tensor:
    """``−log(clip(scores, 1e-5, 1))`` as float32 (pydensecrf's ``unary_from_softmax``).

    Args:
        scores: float [B, L, H, W], finite and >= 0.
    """
    scores = _tensor(scores, "scores")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating tensor, got dtype {scores.dtype}")
    if scores.numel() > 0:
        minimum, maximum = torch.aminmax(scores)  # NaN propagates
        if not (torch.isfinite(minimum) and torch.isfinite(maximum)):
            raise ValueError("scores contains NaN or infinite values")
        if minimum < 0:
            raise ValueError(f"scores must be non-negative (probabilities in [0, 1]), got a minimum of {minimum}")
    return torch.clamp(scores, 1e-5, 1.0).log_().neg_().float()


def mean_field(
    unary: Tensor,
    lattices: CrfLattices,
    *,
    n_iter: int = TRAINING_CRF.n_iter,
    gaussian_compat: float = TRAINING_CRF.gaussian_compat,
    bilateral_compat: float = TRAINING_CRF.bilateral_compat,
    label_mask: Tensor | None = None,
    compat_matrices: Tensor | None = None,
) -> Tensor:
    """Mean-field inference of :func:`dense_crf` on prebuilt lattices.

    Args:
        unary: float32 [B, L, H, W] (e.g. :func:`unary_from_scores`), finite.
        lattices: from :func:`crf_lattices` for the same B, H, W.
        n_iter, gaussian_compat, bilateral_compat, label_mask: as in :func:`dense_crf`.
        compat_matrices: float32 [2, L, L], finite, or None (Potts): label compatibility
            matrices μ_g, μ_b of the Gaussian and bilateral kernels, scaled by their compat
            weights: the update's energy of label l is
            ``−U_l + Σ_m w_g μ_g[l, m] f_g,m + Σ_m w_b μ_b[l, m] f_b,m`` over the present labels m
            (f_k the normalised filter of Q); the identity is the Potts model. At most 64
            present labels per image.

    Returns:
        Q float32 [B, L, H, W]; without compat_matrices bitwise equal to :func:`dense_crf` with
        the same parameters.
    """
    unary = _tensor(unary, "unary")
    if unary.dim() != 4 or unary.shape[2:] != (lattices.height, lattices.width):
        raise ValueError(
            f"unary must be [B, L, H, W] with H, W = {lattices.height}, {lattices.width} of the lattices, "
            f"got shape {tuple(unary.shape)}"
        )
    batch, labels, height, width = unary.shape
    q = ops().dense_crf_meanfield(
        unary.reshape(batch, labels, height * width),
        _optional_tensor(label_mask, "label_mask"),
        lattices.gaussian.tensors.as_tuple(),
        lattices.bilateral.tensors.as_tuple(),
        float(gaussian_compat),
        float(bilateral_compat),
        int(n_iter),
        _optional_tensor(compat_matrices, "compat_matrices"),
    )
    return q.reshape(batch, labels, height, width)
