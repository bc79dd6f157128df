"""pydensecrf's ``DenseCRF`` and ``DenseCRF2D`` on rrm_ops's permutohedral lattice.

The mean field is pydensecrf's: ``Q⁰ = softmax(−U)``, then per step
``Q = softmax(−U − Σ_k C_k(F_k(Q)))`` over the pairwise terms in the order they were added,
with ``F_k`` the lattice filter of term k under its normalisation and ``C_k`` its label
compatibility: a number w (Potts) gives ``C(m) = −w·m``, a float32 vector v gives
``C(m)_l = v_l·m_l`` and a float32 L × L matrix M gives ``C(m) = ½(M + Mᵀ)·m``. Note the signs:
a Potts weight w attracts equal labels, a vector or matrix attracts with negative entries.

The lattices are built as pydensecrf's x86 build builds them (points in blocks of 4), so the
filters agree with it to float rounding. A ``DenseCRF2D`` with exactly pydensecrf's usual two
terms (a Gaussian and a bilateral kernel, symmetric normalisation, one σ per kind) runs the
fused mean-field kernel: :func:`rrm_ops.dense_crf` for Potts weights, :func:`rrm_ops.mean_field`
with compatibility matrices for vectors and matrices (up to 64 labels). Every other
combination runs the steps above on the lattice filter op, one filtering of all labels per term
and step.

Results are float32 numpy arrays [nlabels, nvar], where pydensecrf returns its ``MatrixXf``
wrapper (a buffer of the same shape and dtype): ``np.array``, ``argmax``, ``reshape`` work alike.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Number

import numpy as np
import torch
from torch import Tensor

from rrm_ops._library import ops
from rrm_ops.compat._arguments import integer_at_least
from rrm_ops.crf import PYDENSECRF_POINT_BLOCK, crf_lattices, mean_field
from rrm_ops.lattice import Lattice

# The lattice's largest feature dimension.
MAX_FEATURE_DIM = 16
# The most labels the fused kernel takes compatibility matrices for.
MAX_FUSED_MATRIX_LABELS = 64


class KernelType(enum.IntEnum):
    """pydensecrf's kernel types. Without parameter learning (not supported) all three filter
    with the features as given, so they give the same result."""

    CONST_KERNEL = 0
    DIAG_KERNEL = 1
    FULL_KERNEL = 2


class NormalizationType(enum.IntEnum):
    """How a term's filter is normalised with ``c = F(1)``: not at all, ``F(v / c)``,
    ``F(v) / c`` or ``F(v / √c) / √c``."""

    NO_NORMALIZATION = 0
    NORMALIZE_BEFORE = 1
    NORMALIZE_AFTER = 2
    NORMALIZE_SYMMETRIC = 3


CONST_KERNEL, DIAG_KERNEL, FULL_KERNEL = KernelType
NO_NORMALIZATION, NORMALIZE_BEFORE, NORMALIZE_AFTER, NORMALIZE_SYMMETRIC = NormalizationType


def _float32_array(value: object, name: str, ndim: int) -> np.ndarray:
    """``value`` as the C-contiguous float32 array pydensecrf's typed memoryviews require, with
    its values checked finite."""
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if array.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32, got {array.dtype}; convert it with .astype(np.float32)")
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _enum_member(value: object, kind: type[enum.IntEnum], name: str) -> enum.IntEnum:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(f"{member.name} ({member.value})" for member in kind)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}") from None


class _Compatibility:
    """The label compatibility of one pairwise term (see the module docstring)."""

    def __init__(self, compat: object, labels: int) -> None:
        if isinstance(compat, Number) and not isinstance(compat, bool):
            if not np.isfinite(float(compat)):
                raise ValueError(f"compat must be finite, got {compat}")
            self.potts = float(np.float32(compat))
            self.weights: Tensor | None = None
            return
        self.potts = None
        ndim = np.ndim(compat)
        if ndim not in (1, 2):
            raise ValueError(
                f"compat must be a number (Potts), a vector of {labels} label weights or a {labels} x {labels} "
                f"matrix, got an array of {ndim} dimensions"
            )
        array = _float32_array(compat, "compat", ndim)
        if array.shape != (labels,) * ndim:
            raise ValueError(f"compat must have shape {(labels,) * ndim} for {labels} labels, got {array.shape}")
        weights = torch.from_numpy(array.copy())
        # pydensecrf keeps the symmetric part of a matrix; for a symmetric one that is itself.
        self.weights = weights if ndim == 1 else (weights + weights.T) * 0.5

    def apply(self, messages: Tensor) -> Tensor:
        """The compatibility of filtered messages [N, L] (subtracted from the energy)."""
        if self.weights is None:
            return messages * -self.potts
        if self.weights.dim() == 1:
            return messages * self.weights
        return messages @ self.weights  # the symmetric matrix, so rows times its transpose

    def kernel_matrix(self, labels: int) -> Tensor:
        """μ [L, L] of the fused kernel, whose energy adds μ·f where pydensecrf subtracts C(f)."""
        if self.weights is None:
            return torch.eye(labels) * self.potts
        return -(torch.diag(self.weights) if self.weights.dim() == 1 else self.weights)


@dataclass(frozen=True)
class _FusedPattern:
    """What a term contributes to the fused dense_crf call: its kind and σ (and the image)."""

    kind: str  # "gaussian" or "bilateral"
    sxy: float
    srgb: float = 0.0
    image: Tensor | None = None


class _PairwiseTerm:
    """One pairwise term: its features (a function giving [N, d]: a term the fused kernel runs
    never needs them), normalisation and compatibility. Its lattice is built on first use."""

    def __init__(
        self,
        features: Callable[[], Tensor],
        compatibility: _Compatibility,
        normalization: NormalizationType,
        fused: _FusedPattern | None,
    ) -> None:
        self.features = features
        self.compatibility = compatibility
        self.normalization = normalization
        self.fused = fused if normalization == NORMALIZE_SYMMETRIC else None
        self._lattice: Lattice | None = None
        self._norm: Tensor | None = None

    def _built(self) -> tuple[Lattice, Tensor | None]:
        if self._lattice is None:
            features = self.features()
            self._lattice = Lattice(features[None], point_block=PYDENSECRF_POINT_BLOCK)
            if self.normalization != NO_NORMALIZATION:
                ones = torch.ones(1, features.shape[0], 1)
                counts = self._lattice.filter(ones).double() + 1e-20
                # In double, then float, as pydensecrf computes the factors.
                norm = 1.0 / counts.sqrt() if self.normalization == NORMALIZE_SYMMETRIC else 1.0 / counts
                self._norm = norm.float()
        return self._lattice, self._norm

    def filter(self, q: Tensor) -> Tensor:
        """The normalised filter of q [N, L] -> [N, L]."""
        lattice, norm = self._built()
        values = q[None]
        if self.normalization in (NORMALIZE_SYMMETRIC, NORMALIZE_BEFORE):
            values = values * norm
        out = lattice.filter(values)
        if self.normalization in (NORMALIZE_SYMMETRIC, NORMALIZE_AFTER):
            out = out * norm
        return out[0]

    def message(self, q: Tensor) -> Tensor:
        """What the term subtracts from the energy for marginals q [N, L]."""
        return self.compatibility.apply(self.filter(q))


def _softmax_over_labels(energy: Tensor) -> Tensor:
    """Q [N, L] from energies [N, L]: max-subtracted exponentials over their sum."""
    shifted = energy - energy.amax(dim=1, keepdim=True)
    exponentials = shifted.exp_()
    return exponentials / exponentials.sum(dim=1, keepdim=True)


class DenseCRF:
    """A dense CRF over ``nvar`` variables and ``nlabels`` labels (pydensecrf's ``DenseCRF``)."""

    def __init__(self, nvar: int, nlabels: int) -> None:
        self._nvar = integer_at_least(nvar, 1, "nvar")
        self._nlabel = integer_at_least(nlabels, 1, "nlabels")
        self._unary: Tensor | None = None  # float32 [L, N], as given
        self._unary_points: Tensor | None = None  # the same as [N, L], made on first use
        self._terms: list[_PairwiseTerm] = []

    def setUnaryEnergy(self, u: np.ndarray, f: np.ndarray | None = None) -> None:  # noqa: N802
        """Sets the unary energies: float32 C-contiguous [nlabels, nvar], finite."""
        if f is not None:
            raise NotImplementedError(
                "setUnaryEnergy(u, f): the logistic unary of pydensecrf's parameter learning is not supported; "
                "pass the energies u alone"
            )
        unary = _float32_array(u, "unary energy", 2)
        if unary.shape != (self._nlabel, self._nvar):
            raise ValueError(
                f"unary energy must have shape (nlabels, nvar) = {(self._nlabel, self._nvar)}, got {unary.shape}"
            )
        self._unary = torch.from_numpy(unary.copy())
        self._unary_points = None

    def setUnary(self, u: object) -> None:  # noqa: N802
        raise NotImplementedError(
            "setUnary: pydensecrf's Unary objects (ConstUnary, LogisticUnary) are not supported; call "
            "setUnaryEnergy(u) with the float32 (nlabels, nvar) energies"
        )

    def addPairwiseEnergy(  # noqa: N802
        self,
        features: np.ndarray,
        compat: object,
        kernel: KernelType = DIAG_KERNEL,
        normalization: NormalizationType = NORMALIZE_SYMMETRIC,
    ) -> None:
        """Adds a Gaussian pairwise term on features: float32 C-contiguous [d, nvar], d in 1..16,
        already divided by their standard deviations."""
        array = _float32_array(features, "features", 2)
        if array.shape[1] != self._nvar:
            raise ValueError(f"features must have shape (d, nvar) with nvar = {self._nvar}, got {array.shape}")
        if not 1 <= array.shape[0] <= MAX_FEATURE_DIM:
            raise ValueError(f"features must have 1 to {MAX_FEATURE_DIM} dimensions (rows), got {array.shape[0]}")
        points = torch.from_numpy(np.ascontiguousarray(array.T))
        self._add_term(lambda: points, compat, kernel, normalization, None)

    def _add_term(
        self,
        features: Callable[[], Tensor],
        compat: object,
        kernel: KernelType,
        normalization: NormalizationType,
        fused: _FusedPattern | None,
    ) -> None:
        _enum_member(kernel, KernelType, "kernel")
        normalization = _enum_member(normalization, NormalizationType, "normalization")
        self._terms.append(_PairwiseTerm(features, _Compatibility(compat, self._nlabel), normalization, fused))

    def _unary_or_zero(self) -> Tensor:
        """The unary [N, L] (points first, the layout of the steps), zero when none was set."""
        if self._unary is None:
            return torch.zeros(self._nvar, self._nlabel)
        if self._unary_points is None:
            self._unary_points = self._unary.T.contiguous()
        return self._unary_points

    def _step(self, q: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """One mean-field step: (new Q, the energy, the last term's message), all [N, L]."""
        energy = -self._unary_or_zero()
        message = None
        for term in self._terms:
            message = term.message(q)
            energy = energy - message
        return _softmax_over_labels(energy), energy, message

    def _run(self, n_iterations: int) -> Tensor:
        """Q [L, N] after n_iterations steps."""
        q = _softmax_over_labels(-self._unary_or_zero())
        for _ in range(n_iterations):
            q = self._step(q)[0]
        return q.T

    def inference(self, niter: int) -> np.ndarray:
        """Q after ``niter`` mean-field steps: float32 [nlabels, nvar]."""
        return np.ascontiguousarray(self._run(integer_at_least(niter, 0, "niter")).numpy())

    def startInference(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: N802
        """(Q, tmp1, tmp2) for :meth:`stepInference`, float32 [nlabels, nvar] each: Q = softmax(−U)
        (zeros without a unary, as in pydensecrf), tmp1 and tmp2 zeros."""
        shape = (self._nlabel, self._nvar)
        q = np.zeros(shape, np.float32)
        if self._unary is not None:
            q[...] = _softmax_over_labels(-self._unary_or_zero()).numpy().T
        return q, np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    def _checked_state(self, value: object, name: str) -> np.ndarray:
        array = _float32_array(value, name, 2)
        if array.shape != (self._nlabel, self._nvar):
            raise ValueError(f"{name} must have shape (nlabels, nvar) = {(self._nlabel, self._nvar)}, got {array.shape}")
        return array

    def stepInference(self, Q: np.ndarray, tmp1: np.ndarray, tmp2: np.ndarray) -> None:  # noqa: N802,N803
        """One mean-field step in place: Q becomes the new marginals, tmp1 the energy they are
        the softmax of, tmp2 the last term's message (all as :meth:`startInference` returns)."""
        arrays = [self._checked_state(value, name) for value, name in ((Q, "Q"), (tmp1, "tmp1"), (tmp2, "tmp2"))]
        for array, name in zip(arrays, ("Q", "tmp1", "tmp2")):
            if not array.flags.writeable:
                raise ValueError(f"{name} must be writeable: stepInference updates it in place")
        q, energy, message = self._step(torch.from_numpy(np.ascontiguousarray(arrays[0].T)))
        arrays[0][...] = q.numpy().T
        arrays[1][...] = energy.numpy().T
        if message is not None:
            arrays[2][...] = message.numpy().T

    def klDivergence(self, Q: np.ndarray) -> float:  # noqa: N802,N803
        """pydensecrf's KL divergence of marginals Q [nlabels, nvar] (up to a constant):
        ``Σ Q log Q + Σ U Q + Σ_k Σ Q ⊙ message_k(Q)``, accumulated in double."""
        q = torch.from_numpy(np.ascontiguousarray(self._checked_state(Q, "Q").T))
        q64 = q.double()
        kl = (q64 * q.clamp_min(1e-20).log().double()).sum()
        if self._unary is not None:
            kl = kl + (self._unary_or_zero().double() * q64).sum()
        for term in self._terms:
            kl = kl + (q * term.message(q)).sum().double()
        return float(kl)


class DenseCRF2D(DenseCRF):
    """A dense CRF over the ``w`` x ``h`` pixels of an image (pydensecrf's ``DenseCRF2D``);
    variable ``j * w + i`` is pixel (row j, column i)."""

    def __init__(self, w: int, h: int, nlabels: int) -> None:
        self._w = integer_at_least(w, 1, "w")
        self._h = integer_at_least(h, 1, "h")
        super().__init__(self._w * self._h, nlabels)

    def _positions(self, sx: float, sy: float) -> Tensor:
        """(column / sx, row / sy) per pixel as float32 [N, 2]."""
        rows, columns = torch.meshgrid(
            torch.arange(self._h, dtype=torch.float32), torch.arange(self._w, dtype=torch.float32), indexing="ij"
        )
        return torch.stack([columns.reshape(-1) / sx, rows.reshape(-1) / sy], dim=1)

    def addPairwiseGaussian(  # noqa: N802
        self,
        sxy: float | tuple[float, float],
        compat: object,
        kernel: KernelType = DIAG_KERNEL,
        normalization: NormalizationType = NORMALIZE_SYMMETRIC,
    ) -> None:
        """Adds a Gaussian term on the positions (column / sx, row / sy); sxy is a number or (sx, sy)."""
        sx, sy = _sigmas(sxy, 2, "sxy")
        fused = _FusedPattern("gaussian", sx) if sx == sy else None
        self._add_term(lambda: self._positions(sx, sy), compat, kernel, normalization, fused)

    def addPairwiseBilateral(  # noqa: N802
        self,
        sxy: float | tuple[float, float],
        srgb: float | tuple[float, float, float],
        rgbim: np.ndarray,
        compat: object,
        kernel: KernelType = DIAG_KERNEL,
        normalization: NormalizationType = NORMALIZE_SYMMETRIC,
    ) -> None:
        """Adds a bilateral term on (column / sx, row / sy, r / sr, g / sg, b / sb); rgbim is uint8
        C-contiguous [h, w, 3]."""
        sx, sy = _sigmas(sxy, 2, "sxy")
        sr, sg, sb = _sigmas(srgb, 3, "srgb")
        image = rgbim if isinstance(rgbim, np.ndarray) else np.asarray(rgbim)
        if image.dtype != np.uint8:
            raise TypeError(f"rgbim must have dtype uint8, got {image.dtype}")
        if image.shape != (self._h, self._w, 3):
            raise ValueError(f"rgbim must have shape (h, w, 3) = {(self._h, self._w, 3)}, got {image.shape}")
        if not image.flags.c_contiguous:
            raise ValueError("rgbim must be C-contiguous; pass np.ascontiguousarray(rgbim)")
        rgb = torch.from_numpy(image.copy())

        def features() -> Tensor:
            colours = rgb.reshape(-1, 3).float() / torch.tensor([sr, sg, sb], dtype=torch.float32)
            return torch.cat([self._positions(sx, sy), colours], dim=1)

        fused = _FusedPattern("bilateral", sx, sr, rgb) if sx == sy and sr == sg == sb else None
        self._add_term(features, compat, kernel, normalization, fused)

    def _run(self, n_iterations: int) -> Tensor:
        kinds = [term.fused.kind if term.fused is not None else None for term in self._terms]
        if kinds != ["gaussian", "bilateral"]:
            return super()._run(n_iterations)
        gaussian, bilateral = (term.fused for term in self._terms)
        unary = (self._unary if self._unary is not None else torch.zeros(self._nlabel, self._nvar)).reshape(
            1, self._nlabel, self._h, self._w
        )
        compatibilities = [term.compatibility for term in self._terms]
        if any(c.potts is None for c in compatibilities):
            if self._nlabel > MAX_FUSED_MATRIX_LABELS:
                return super()._run(n_iterations)
            lattices = crf_lattices(
                bilateral.image[None], gaussian_sxy=gaussian.sxy, bilateral_sxy=bilateral.sxy,
                bilateral_srgb=bilateral.srgb,
            )
            matrices = torch.stack([c.kernel_matrix(self._nlabel) for c in compatibilities])
            q = mean_field(unary, lattices, n_iter=n_iterations, gaussian_compat=1.0, bilateral_compat=1.0,
                           compat_matrices=matrices)
            return q.reshape(self._nlabel, self._nvar)
        q = ops().dense_crf(
            None,
            bilateral.image[None],
            unary=unary,
            n_iter=n_iterations,
            gaussian_sxy=gaussian.sxy,
            gaussian_compat=self._terms[0].compatibility.potts,
            bilateral_sxy=bilateral.sxy,
            bilateral_srgb=bilateral.srgb,
            bilateral_compat=self._terms[1].compatibility.potts,
            label_mask=None,
        )
        return q.reshape(self._nlabel, self._nvar)


def _sigmas(value: object, count: int, name: str) -> tuple[float, ...]:
    """A number or a sequence of ``count`` numbers -> ``count`` positive finite float32 values."""
    values = (value,) * count if isinstance(value, Number) else tuple(value)
    if len(values) != count:
        raise ValueError(f"{name} must be a number or {count} numbers, got {value!r}")
    sigmas = tuple(float(np.float32(v)) for v in values)
    if not all(np.isfinite(s) and s > 0 for s in sigmas):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return sigmas
