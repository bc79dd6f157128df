"""rrm_ops.compat.pydensecrf against pydensecrf itself, pattern by pattern, on real photographs.

Each documented usage pattern runs twice, once with each module behind the same import name,
and must agree on at least 99.9 % of the argmax labels with max |ΔQ| <= 1e-4.
"""

import numpy as np
import pydensecrf.densecrf as their_densecrf
import pydensecrf.utils as their_utils
import pytest
import torch

from rrm_ops.compat.pydensecrf import densecrf as our_densecrf
from rrm_ops.compat.pydensecrf import utils as our_utils
from test_crf import resized_photo, smooth_scores

MODULES = {"theirs": (their_densecrf, their_utils), "ours": (our_densecrf, our_utils)}
SIZES = [(40, 57, "astronaut"), (63, 48, "chelsea"), (97, 130, "coffee")]


def assert_agree(theirs: np.ndarray, ours: np.ndarray) -> None:
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32 and ours.shape == theirs.shape
    agreement = np.mean(theirs.argmax(0) == ours.argmax(0))
    assert agreement >= 0.999, agreement
    assert np.abs(theirs - ours).max() <= 1e-4, np.abs(theirs - ours).max()


def both(pattern, *args) -> tuple[np.ndarray, np.ndarray]:
    return tuple(np.array(pattern(*MODULES[side], *args), dtype=np.float32) for side in ("theirs", "ours"))


def gaussian_and_bilateral(dcrf, utils, scores, image, n_iter):
    labels, height, width = scores.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(utils.unary_from_softmax(scores))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=10)
    return crf.inference(n_iter)


@pytest.mark.parametrize("labels", [2, 5, 21])
@pytest.mark.parametrize("height, width, name", SIZES)
def test_2d_gaussian_and_bilateral(height, width, name, labels):
    image = resized_photo(name, height, width)
    scores = smooth_scores(labels, height, width, seed=labels)
    for n_iter in (0, 1, 5, 10):
        assert_agree(*both(gaussian_and_bilateral, scores, image, n_iter))


def unequal_sigmas(dcrf, utils, scores, image):
    labels, height, width = scores.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(utils.unary_from_softmax(scores, scale=0.9))
    crf.addPairwiseGaussian(sxy=(2, 4), compat=3)
    crf.addPairwiseBilateral(sxy=(60, 70), srgb=(10, 13, 16), rgbim=image, compat=8)
    return crf.inference(5)


def test_2d_per_axis_sigmas():
    image = resized_photo("chelsea", 63, 48)
    assert_agree(*both(unequal_sigmas, smooth_scores(4, 63, 48, seed=1), image))


def custom_features(dcrf, utils, scores, image):
    labels, height, width = scores.shape
    crf = dcrf.DenseCRF(height * width, labels)
    crf.setUnaryEnergy(utils.unary_from_softmax(scores))
    crf.addPairwiseEnergy(utils.create_pairwise_gaussian(sdims=(3, 3), shape=(height, width)), compat=3)
    crf.addPairwiseEnergy(utils.create_pairwise_bilateral((60, 60), (13, 13, 13), image, chdim=2), compat=10)
    # A d = 1 feature (luminance alone) and a d = 3 one (position and luminance).
    luminance = image.astype(np.float32).mean(axis=2)
    crf.addPairwiseEnergy((luminance / 20).reshape(1, -1), compat=2)
    crf.addPairwiseEnergy(utils.create_pairwise_bilateral((30, 30), 10, luminance), compat=1)
    return crf.inference(5)


@pytest.mark.parametrize("height, width, name", SIZES)
def test_generic_dense_crf_with_custom_features(height, width, name):
    image = resized_photo(name, height, width)
    assert_agree(*both(custom_features, smooth_scores(5, height, width, seed=2), image))


def from_labels(dcrf, utils, annotation, n_labels, image, zero_unsure):
    height, width = annotation.shape
    crf = dcrf.DenseCRF2D(width, height, n_labels)
    crf.setUnaryEnergy(utils.unary_from_labels(annotation, n_labels, gt_prob=0.7, zero_unsure=zero_unsure))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=10)
    return crf.inference(5)


@pytest.mark.parametrize("zero_unsure", [True, False])
def test_unary_from_labels(zero_unsure):
    image = resized_photo("coffee", 97, 130)
    # A coarse annotation from thresholded scores, with an unknown (0) band when zero_unsure.
    scores = smooth_scores(3, 97, 130, seed=3)
    annotation = scores.argmax(0) + (1 if zero_unsure else 0)
    if zero_unsure:
        annotation[:, 40:60] = 0
    assert_agree(*both(from_labels, annotation, 3, image, zero_unsure))


def with_compat(dcrf, utils, scores, image, gaussian_compat, bilateral_compat):
    labels, height, width = scores.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(utils.unary_from_softmax(scores))
    crf.addPairwiseGaussian(sxy=3, compat=gaussian_compat)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=bilateral_compat)
    return crf.inference(10)


def compat_forms(labels: int) -> dict[str, object]:
    rng = np.random.default_rng(labels)
    asymmetric = rng.uniform(-6, 1, (labels, labels)).astype(np.float32)
    return {
        "vector": -rng.uniform(1, 8, labels).astype(np.float32),
        "matrix": asymmetric,  # pydensecrf uses its symmetric part
        "potts_as_matrix": (np.eye(labels, dtype=np.float32) - 1) * 5,
    }


@pytest.mark.parametrize("form", ["vector", "matrix", "potts_as_matrix"])
@pytest.mark.parametrize("labels", [3, 21])
def test_vector_and_matrix_compat(labels, form):
    image = resized_photo("astronaut", 40, 57)
    scores = smooth_scores(labels, 40, 57, seed=4)
    compat = compat_forms(labels)[form]
    assert_agree(*both(with_compat, scores, image, 3, compat))
    assert_agree(*both(with_compat, scores, image, compat, 10))


def several_terms(dcrf, utils, scores, image):
    labels, height, width = scores.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(utils.unary_from_softmax(scores))
    crf.addPairwiseGaussian(sxy=3, compat=3, kernel=dcrf.CONST_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC)
    crf.addPairwiseGaussian(sxy=7, compat=1, kernel=dcrf.FULL_KERNEL, normalization=dcrf.NORMALIZE_BEFORE)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=6, normalization=dcrf.NORMALIZE_AFTER)
    crf.addPairwiseBilateral(sxy=20, srgb=5, rgbim=image, compat=0.05, normalization=dcrf.NO_NORMALIZATION)
    crf.addPairwiseBilateral(
        sxy=40, srgb=20, rgbim=image, compat=compat_forms(labels)["matrix"], kernel=dcrf.DIAG_KERNEL
    )
    return crf.inference(5)


@pytest.mark.parametrize("height, width, name", SIZES)
def test_several_terms_every_normalisation_and_kernel_type(height, width, name):
    image = resized_photo(name, height, width)
    assert_agree(*both(several_terms, smooth_scores(4, height, width, seed=5), image))


def stepwise(dcrf, utils, scores, image):
    labels, height, width = scores.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(utils.unary_from_softmax(scores))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=compat_forms(labels)["vector"])
    q, tmp1, tmp2 = crf.startInference()
    states, divergences = [], []
    for _ in range(4):
        divergences.append(crf.klDivergence(q))
        crf.stepInference(q, tmp1, tmp2)
        states.append(np.array(q, dtype=np.float32))
    return np.stack(states), divergences


def test_stepwise_inference_and_kl_divergence():
    image = resized_photo("chelsea", 63, 48)
    scores = smooth_scores(4, 63, 48, seed=6)
    (their_states, their_kl), (our_states, our_kl) = (stepwise(*MODULES[side], scores, image) for side in MODULES)
    for theirs, ours in zip(their_states, our_states):
        assert_agree(theirs, ours)
    np.testing.assert_allclose(our_kl, their_kl, rtol=1e-5)
    # The steps are inference's steps (which here run the fused kernel: equal up to rounding).
    crf = our_densecrf.DenseCRF2D(48, 63, 4)
    crf.setUnaryEnergy(our_utils.unary_from_softmax(scores))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=compat_forms(4)["vector"])
    np.testing.assert_allclose(crf.inference(4), our_states[-1], rtol=0, atol=1e-5)


def test_without_a_unary_start_is_zero_and_inference_uniform():
    for dcrf in (their_densecrf, our_densecrf):
        crf = dcrf.DenseCRF(6, 3)
        crf.addPairwiseEnergy(np.arange(12, dtype=np.float32).reshape(2, 6), compat=3)
        np.testing.assert_array_equal(np.array(crf.startInference()[0]), np.zeros((3, 6), np.float32))
        np.testing.assert_allclose(np.array(crf.inference(2)), np.full((3, 6), 1 / 3, np.float32), rtol=1e-6)


def test_utils_equal_pydensecrf_bitwise():
    image = resized_photo("astronaut", 40, 57)
    scores = smooth_scores(5, 40, 57, seed=7)
    annotation = np.random.default_rng(0).integers(0, 6, (40, 57))
    pairs = [
        (lambda u: u.unary_from_softmax(scores)),
        (lambda u: u.unary_from_softmax(scores.astype(np.float64), scale=0.8)),
        (lambda u: u.unary_from_softmax(scores, clip=None)),
        (lambda u: u.unary_from_labels(annotation, 5, gt_prob=0.6)),
        (lambda u: u.unary_from_labels(annotation % 5, 5, gt_prob=0.9, zero_unsure=False)),
        (lambda u: u.create_pairwise_gaussian(sdims=(3, 5), shape=(40, 57))),
        (lambda u: u.create_pairwise_bilateral(sdims=(60, 80), schan=(13, 10, 7), img=image, chdim=2)),
        (lambda u: u.create_pairwise_bilateral(sdims=(60, 80), schan=13, img=image[..., 0])),
    ]
    for make in pairs:
        theirs, ours = make(their_utils), make(our_utils)
        assert ours.dtype == theirs.dtype and ours.flags.c_contiguous
        np.testing.assert_array_equal(ours, theirs)


def test_constants_match_pydensecrf():
    for name in ("CONST_KERNEL", "DIAG_KERNEL", "FULL_KERNEL", "NO_NORMALIZATION", "NORMALIZE_BEFORE",
                 "NORMALIZE_AFTER", "NORMALIZE_SYMMETRIC"):
        assert int(getattr(our_densecrf, name)) == int(getattr(their_densecrf, name))


def test_matrix_compat_is_independent_of_the_thread_count():
    image = resized_photo("coffee", 97, 130)
    scores = smooth_scores(21, 97, 130, seed=8)
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(with_compat(our_densecrf, our_utils, scores, image, 3, compat_forms(21)["matrix"]))
    finally:
        torch.set_num_threads(previous)
    np.testing.assert_array_equal(results[0], results[1])


def small_crf(labels: int = 3) -> our_densecrf.DenseCRF2D:
    return our_densecrf.DenseCRF2D(5, 4, labels)


UNARY = np.zeros((3, 20), np.float32)
IMAGE = np.zeros((4, 5, 3), np.uint8)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda c: c.setUnaryEnergy(UNARY.astype(np.float64)), TypeError, "unary energy must have dtype float32"),
        (lambda c: c.setUnaryEnergy(np.zeros((20, 3), np.float32).T), ValueError, "must be C-contiguous"),
        (lambda c: c.setUnaryEnergy(UNARY[:, :19].copy()), ValueError, r"must have shape \(nlabels, nvar\)"),
        (lambda c: c.setUnaryEnergy(np.full((3, 20), np.nan, np.float32)), ValueError, "NaN"),
        (lambda c: c.setUnaryEnergy(UNARY, UNARY), NotImplementedError, "logistic unary"),
        (lambda c: c.setUnary(UNARY), NotImplementedError, "Unary objects"),
        (lambda c: c.addPairwiseEnergy(np.zeros((2, 19), np.float32), 3), ValueError, "nvar = 20"),
        (lambda c: c.addPairwiseEnergy(np.zeros((17, 20), np.float32), 3), ValueError, "1 to 16 dimensions"),
        (lambda c: c.addPairwiseEnergy(np.zeros((2, 20), np.float32), np.zeros(4, np.float32)), ValueError,
         r"compat must have shape \(3,\)"),
        (lambda c: c.addPairwiseEnergy(np.zeros((2, 20), np.float32), np.zeros((3, 3, 3), np.float32)), ValueError,
         "3 dimensions"),
        (lambda c: c.addPairwiseEnergy(np.zeros((2, 20), np.float32), np.eye(3)), TypeError,
         "compat must have dtype float32"),
        (lambda c: c.addPairwiseEnergy(np.zeros((2, 20), np.float32), float("nan")), ValueError, "compat must be finite"),
        (lambda c: c.addPairwiseEnergy(np.zeros((2, 20), np.float32), 3, kernel=5), ValueError, "kernel must be one of"),
        (lambda c: c.addPairwiseGaussian(sxy=0, compat=3), ValueError, "sxy must be positive"),
        (lambda c: c.addPairwiseGaussian(sxy=(1, 2, 3), compat=3), ValueError, "sxy must be a number or 2"),
        (lambda c: c.addPairwiseBilateral(80, 13, IMAGE.astype(np.float32), 10), TypeError, "rgbim must have dtype uint8"),
        (lambda c: c.addPairwiseBilateral(80, 13, IMAGE[:3], 10), ValueError, r"rgbim must have shape \(h, w, 3\)"),
        (lambda c: c.addPairwiseBilateral(80, 13, np.zeros((5, 4, 3), np.uint8).transpose(1, 0, 2), 10), ValueError,
         "rgbim must be C-contiguous"),
        (lambda c: c.addPairwiseGaussian(3, 3, normalization=7), ValueError, "normalization must be one of"),
        (lambda c: c.inference(-1), ValueError, "niter must be an integer >= 0"),
        (lambda c: c.stepInference(*(np.zeros((3, 19), np.float32),) * 3), ValueError, r"Q must have shape"),
        (lambda c: c.klDivergence(np.zeros((3, 20))), TypeError, "Q must have dtype float32"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call(small_crf())


def test_bad_sizes_and_utils_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="nlabels must be an integer >= 1"):
        our_densecrf.DenseCRF(10, 0)
    with pytest.raises(ValueError, match="w must be an integer >= 1"):
        our_densecrf.DenseCRF2D(-1, 4, 2)
    with pytest.raises(ValueError, match="sm contains NaN"):
        our_utils.unary_from_softmax(np.full((2, 3, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="gt_prob must be in"):
        our_utils.unary_from_labels(np.zeros((3, 3), int), 2, gt_prob=1.0)
    with pytest.raises(ValueError, match="labels must be in 0..2"):
        our_utils.unary_from_labels(np.full((3, 3), 3), 2, gt_prob=0.5)
    with pytest.raises(TypeError, match="labels must be an integer array"):
        our_utils.unary_from_labels(np.zeros((3, 3)), 2, gt_prob=0.5)
    with pytest.raises(ValueError, match="sdims must give one scale per axis"):
        our_utils.create_pairwise_gaussian(sdims=(3,), shape=(4, 5))
