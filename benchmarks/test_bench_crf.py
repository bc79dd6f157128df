"""Dense CRF speed: rrm_ops.dense_crf vs pydensecrf called as RRM calls it, side by side.

321 x 321 photographs, 10 iterations, RRM's training parameters ((3, 3), (80, 13, 10)), L = 3
and L = 21, one image and a batch of 4 (pydensecrf runs the 4 images one after another).
Each group holds ours and pydensecrf for the same inputs; the results are checked equal
(argmax agreement >= 99.9%, max |dQ| <= 1e-2) before timing. ``rrm_ops`` reuses the Gaussian
lattice between rounds, as repeated calls at one image size do (a training loop);
``rrm_ops_cold`` forgets it before every round, like pydensecrf, which rebuilds both lattices.

Run: python -m pytest benchmarks/test_bench_crf.py --benchmark-only
"""

import numpy as np
import pydensecrf.densecrf as dcrf
import pytest
import torch
import torch.nn.functional as F
from pydensecrf.utils import unary_from_softmax

import rrm_ops
from conftest import photo_batch

SIZE = 321
CRF = rrm_ops.TRAINING_CRF
N_ITER = CRF.n_iter


def cam_like_scores(batch: int, labels: int, size: int) -> torch.Tensor:
    """float32 [batch, labels, size, size] in [0, 1]: smooth maps like upsampled CAMs."""
    coarse = torch.rand(batch, labels, size // 16, size // 16, generator=torch.Generator().manual_seed(labels))
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) ** 4


def pydensecrf_like_rrm(scores: np.ndarray, image: np.ndarray) -> np.ndarray:
    """RRM's imutils.crf_inference: scores [L, H, W], image uint8 [H, W, 3] -> Q [L, H, W]."""
    labels, height, width = scores.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(scores)))
    crf.addPairwiseGaussian(sxy=CRF.gaussian_sxy, compat=CRF.gaussian_compat)
    crf.addPairwiseBilateral(sxy=CRF.bilateral_sxy, srgb=CRF.bilateral_srgb, rgbim=np.copy(image),
                             compat=CRF.bilateral_compat)
    return np.array(crf.inference(N_ITER)).reshape(labels, height, width)


def pydensecrf_batch(scores: np.ndarray, images: np.ndarray) -> np.ndarray:
    return np.stack([pydensecrf_like_rrm(s, image) for s, image in zip(scores, images)])


def ours(scores: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return rrm_ops.dense_crf(scores, images, **CRF.as_kwargs())


@pytest.mark.parametrize("implementation", ["rrm_ops", "rrm_ops_cold", "pydensecrf"])
@pytest.mark.parametrize("batch, labels", [(1, 3), (1, 21), (4, 3), (4, 21)])
def test_dense_crf(benchmark, batch, labels, implementation):
    benchmark.group = f"dense CRF {SIZE}x{SIZE}, {N_ITER} iterations, L={labels}, batch {batch}"
    images = photo_batch(SIZE, batch)
    scores = cam_like_scores(batch, labels, SIZE)
    scores_np, images_np = scores.numpy(), images.numpy()
    setup = None
    if implementation.startswith("rrm_ops"):
        reference = pydensecrf_batch(scores_np[:1], images_np[:1])[0]
        mine = ours(scores[:1], images[:1])[0].numpy()
        assert np.mean(mine.argmax(0) == reference.argmax(0)) >= 0.999
        assert np.abs(mine - reference).max() <= 1e-2
        run, args = ours, (scores, images)
        if implementation == "rrm_ops_cold":
            # Every call builds its Gaussian lattice too, as a call at a new image size does.
            setup = rrm_ops._C.clear_gaussian_lattice_cache
    else:
        run, args = pydensecrf_batch, (scores_np, images_np)
    benchmark.extra_info.update(threads=torch.get_num_threads(), images=batch, labels=labels)
    if setup is None:
        benchmark.pedantic(run, args=args, rounds=5, warmup_rounds=1)
    else:
        benchmark.pedantic(lambda: run(*args), setup=setup, rounds=5, warmup_rounds=1)
