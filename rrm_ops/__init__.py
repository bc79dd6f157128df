"""Batched, deterministic CPU/CUDA kernels for RRM, exposed as ``torch.ops.rrm_ops.*``.

``import rrm_ops`` loads the compiled extension ``rrm_ops._C`` and registers fake kernels and
autograd formulas; the functions below are the supported Python API.
"""

import torch  # noqa: F401  (loads libtorch before the extension)

try:
    from rrm_ops import _C  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        "rrm_ops._C is not built. Install the package with "
        "`pip install torch==2.13.0 && pip install --no-build-isolation -e .` from the repository root "
        f"(original error: {error})"
    ) from error

from rrm_ops import _meta  # noqa: F401,E402  (registers fake kernels)
from rrm_ops.crf import (  # noqa: E402
    INFERENCE_CRF,
    TRAINING_CRF,
    CrfLattices,
    CrfParams,
    crf_lattices,
    dense_crf,
    mean_field,
    unary_from_scores,
)
from rrm_ops.energy_loss import DenseEnergyLoss, dense_energy_loss, energy_gate, gated_dense_energy  # noqa: E402
from rrm_ops.lattice import Lattice, bilateral_features, gaussian_features  # noqa: E402
from rrm_ops.mining import reliable_region_labels  # noqa: E402

__all__ = [
    "INFERENCE_CRF",
    "TRAINING_CRF",
    "CrfLattices",
    "CrfParams",
    "DenseEnergyLoss",
    "Lattice",
    "bilateral_features",
    "crf_lattices",
    "dense_crf",
    "dense_energy_loss",
    "energy_gate",
    "gated_dense_energy",
    "gaussian_features",
    "mean_field",
    "reliable_region_labels",
    "unary_from_scores",
]
