"""The compat layers' speed, each against its baseline in the same run.

* pydensecrf's API: the same 321 x 321 photograph and unary through pydensecrf itself, through
  ``rrm_ops.compat.pydensecrf`` (the same Python calls) and through ``rrm_ops.dense_crf`` (the
  op the compat layer runs), 10 iterations, RRM's parameters, L = 3 and 21; also a full L x L
  compatibility matrix on the bilateral term (compat layer vs pydensecrf). The compat layer costs
  nothing that shows when its ratio over pydensecrf is that of ``dense_crf``.
* rloss's ``bilateralfilter_batch``: N = 4 images of 161 x 161 (321² at rloss's scale 0.5),
  K = 21 channels in one call vs one call per channel (a lattice build per channel).

Run: python -m pytest benchmarks/test_bench_compat.py --benchmark-only
"""

import numpy as np
import pydensecrf.densecrf as their_densecrf
import pytest
import torch
from pydensecrf.utils import unary_from_softmax

import rrm_ops
from conftest import photo_batch
from rrm_ops.compat.bilateralfilter import bilateralfilter_batch
from rrm_ops.compat.pydensecrf import densecrf as our_densecrf
from test_bench_crf import CRF, N_ITER, SIZE, cam_like_scores


def densecrf_2d(dcrf, unary: np.ndarray, image: np.ndarray, bilateral_compat: object) -> np.ndarray:
    """The usual pydensecrf program: scores' unary, the Gaussian and bilateral kernels of RRM's
    training CRF, the given bilateral compatibility."""
    crf = dcrf.DenseCRF2D(SIZE, SIZE, unary.shape[0])
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=CRF.gaussian_sxy, compat=CRF.gaussian_compat)
    crf.addPairwiseBilateral(sxy=CRF.bilateral_sxy, srgb=CRF.bilateral_srgb, rgbim=image, compat=bilateral_compat)
    return np.array(crf.inference(N_ITER))


def bilateral_matrix(labels: int) -> np.ndarray:
    """A symmetric compatibility: -10 on the diagonal (Potts-like attraction), ±1 elsewhere."""
    off = np.random.default_rng(labels).uniform(-1, 1, (labels, labels))
    return ((off + off.T) / 2 - np.eye(labels) * (10 + np.diag(off))).astype(np.float32)


@pytest.mark.parametrize("implementation", ["compat", "dense_crf", "pydensecrf"])
@pytest.mark.parametrize("labels, compat", [(3, "potts"), (21, "potts"), (21, "matrix")])
def test_pydensecrf_api(benchmark, labels, compat, implementation):
    if compat == "matrix" and implementation == "dense_crf":
        pytest.skip("dense_crf takes Potts weights only")
    benchmark.group = f"pydensecrf API {SIZE}x{SIZE}, {N_ITER} iterations, L={labels}, {compat} bilateral compat"
    image = photo_batch(SIZE)[0].numpy()
    unary = np.ascontiguousarray(unary_from_softmax(cam_like_scores(1, labels, SIZE)[0].numpy()))
    bilateral_compat = CRF.bilateral_compat if compat == "potts" else bilateral_matrix(labels)
    reference = densecrf_2d(their_densecrf, unary, image, bilateral_compat)
    if implementation == "dense_crf":
        unary_tensor, image_tensor = torch.from_numpy(unary).reshape(1, labels, SIZE, SIZE), torch.from_numpy(image)[None]

        def run():
            q = rrm_ops.dense_crf(None, image_tensor, unary=unary_tensor, **CRF.as_kwargs())
            return np.array(q[0].reshape(labels, -1))  # the copy the pydensecrf programs make too
    else:
        dcrf = our_densecrf if implementation == "compat" else their_densecrf

        def run():
            return densecrf_2d(dcrf, unary, image, bilateral_compat)
    q = run()
    assert np.mean(q.argmax(0) == reference.argmax(0)) >= 0.999
    assert np.abs(q - reference).max() <= 1e-4
    benchmark.extra_info.update(threads=torch.get_num_threads(), labels=labels, compat=compat)
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)


BATCH, CHANNELS, SMALL = 4, 21, 161


@pytest.mark.parametrize("implementation", ["one_call", "per_class_loop"])
def test_bilateralfilter_batch(benchmark, implementation):
    benchmark.group = f"bilateralfilter_batch, N={BATCH}, K={CHANNELS}, {SMALL}x{SMALL}"
    images = np.ascontiguousarray(photo_batch(SMALL, BATCH).numpy().transpose(0, 3, 1, 2), dtype=np.float32)
    segmentation = torch.softmax(cam_like_scores(BATCH, CHANNELS, SMALL) * 20, dim=1).numpy()
    per_class = [np.ascontiguousarray(segmentation[:, k]).ravel() for k in range(CHANNELS)]
    outs = np.zeros(segmentation.size, np.float32)
    class_outs = [np.zeros(BATCH * SMALL * SMALL, np.float32) for _ in range(CHANNELS)]

    def one_call():
        bilateralfilter_batch(images.ravel(), segmentation.ravel(), outs, BATCH, CHANNELS, SMALL, SMALL, 15.0, 50.0)

    def per_class_loop():
        for values, out in zip(per_class, class_outs):
            bilateralfilter_batch(images.ravel(), values, out, BATCH, 1, SMALL, SMALL, 15.0, 50.0)

    run = one_call if implementation == "one_call" else per_class_loop
    benchmark.extra_info.update(threads=torch.get_num_threads())
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
