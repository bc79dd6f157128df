"""The mean-field kernel with label compatibility matrices (``mean_field(compat_matrices=...)``):
against pydensecrf's MatrixCompatibility, Potts as the identity, determinism, bad inputs."""

import numpy as np
import pydensecrf.densecrf as dcrf
import pytest
import torch
from pydensecrf.utils import unary_from_softmax

import rrm_ops
from test_crf import photo_batch, resized_photo, smooth_scores


def symmetric_matrices(labels: int, seed: int) -> torch.Tensor:
    """float32 [2, L, L]: symmetric, attracting diagonal, mixed off-diagonal entries."""
    generator = torch.Generator().manual_seed(seed)
    matrices = torch.rand(2, labels, labels, generator=generator) * 4 - 2
    return (matrices + matrices.transpose(1, 2)) * 0.5 + torch.eye(labels) * 4


def pydensecrf_with_matrices(scores: np.ndarray, image: np.ndarray, matrices: np.ndarray, n_iter: int) -> np.ndarray:
    """pydensecrf with MatrixCompatibility; its energy subtracts M·f where ours adds μ·f."""
    labels, height, width = scores.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(scores)))
    crf.addPairwiseGaussian(sxy=3, compat=np.ascontiguousarray(-matrices[0]))
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=np.ascontiguousarray(-matrices[1]))
    return np.array(crf.inference(n_iter)).reshape(labels, height, width)


def ours(scores: np.ndarray, images: np.ndarray, matrices: torch.Tensor, n_iter: int, **kwargs) -> torch.Tensor:
    lattices = rrm_ops.crf_lattices(torch.from_numpy(images))
    unary = rrm_ops.unary_from_scores(torch.from_numpy(scores))
    return rrm_ops.mean_field(unary, lattices, n_iter=n_iter, gaussian_compat=1.0, bilateral_compat=1.0,
                              compat_matrices=matrices, **kwargs)


@pytest.mark.parametrize("labels", [2, 5, 21, 30])
@pytest.mark.parametrize("height, width, name", [(40, 57, "astronaut"), (97, 130, "coffee")])
def test_matches_pydensecrf_matrix_compatibility(height, width, name, labels):
    image = resized_photo(name, height, width)
    scores = smooth_scores(labels, height, width, seed=labels)
    matrices = symmetric_matrices(labels, seed=labels)
    for n_iter in (1, 5, 10):
        theirs = pydensecrf_with_matrices(scores, image, matrices.numpy(), n_iter)
        mine = ours(scores[None], image[None], matrices, n_iter)[0].numpy()
        assert np.mean(mine.argmax(0) == theirs.argmax(0)) >= 0.999
        assert np.abs(mine - theirs).max() <= 1e-4


def test_scaled_identities_are_bitwise_the_potts_model():
    images = photo_batch(37, 45)
    scores = torch.from_numpy(np.stack([smooth_scores(6, 37, 45, seed=i) for i in range(3)]))
    lattices = rrm_ops.crf_lattices(images)
    unary = rrm_ops.unary_from_scores(scores)
    potts = rrm_ops.mean_field(unary, lattices, n_iter=5, gaussian_compat=3.0, bilateral_compat=10.0)
    identities = torch.eye(6).expand(2, 6, 6).contiguous()
    matrix = rrm_ops.mean_field(unary, lattices, n_iter=5, gaussian_compat=3.0, bilateral_compat=10.0,
                                compat_matrices=identities)
    assert torch.equal(matrix, potts)
    # The weights inside the matrices instead: the kernel's scale is rounded at another step.
    weighted = identities * torch.tensor([3.0, 10.0])[:, None, None]
    inside = rrm_ops.mean_field(unary, lattices, n_iter=5, gaussian_compat=1.0, bilateral_compat=1.0,
                                compat_matrices=weighted)
    torch.testing.assert_close(inside, potts, rtol=0, atol=1e-5)


def test_label_mask_equals_the_submatrix_on_the_present_labels():
    height, width, labels = 45, 61, 5
    images = np.stack([resized_photo(name, height, width) for name in ("astronaut", "rocket")])
    scores = np.stack([smooth_scores(labels, height, width, seed=20 + i) for i in range(2)])
    mask = np.array([[True, False, True, True, False], [False, True, False, False, True]])
    matrices = symmetric_matrices(labels, seed=3)
    q = ours(scores, images, matrices, 5, label_mask=torch.from_numpy(mask)).numpy()
    for i in range(2):
        assert (q[i][~mask[i]] == 0).all()
        present = np.flatnonzero(mask[i])
        sub = matrices.numpy()[:, present][:, :, present]
        alone = pydensecrf_with_matrices(scores[i][present], images[i], sub, 5)
        assert np.abs(q[i][present] - alone).max() <= 1e-4


def _with_threads(count: int, run):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(count)
        return run()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("height, width", [(41, 33), (257, 265)])  # one CPU stripe, two stripes
def test_one_and_two_threads_give_the_same_bits(height, width):
    images = photo_batch(height, width)[:2]
    scores = np.stack([smooth_scores(21, height, width, seed=i) for i in range(2)])
    matrices = symmetric_matrices(21, seed=1)
    single = _with_threads(1, lambda: ours(scores, images.numpy(), matrices, 5))
    double = _with_threads(2, lambda: ours(scores, images.numpy(), matrices, 5))
    assert torch.equal(single, double)


def test_batched_equals_per_image_bitwise():
    images = photo_batch(37, 52).numpy()
    scores = np.stack([smooth_scores(6, 37, 52, seed=i) for i in range(3)])
    mask = torch.tensor([[True] * 6, [True, False, True, False, True, False], [False, True] + [False] * 4])
    matrices = symmetric_matrices(6, seed=2)
    alone = torch.cat(
        [ours(scores[i : i + 1], images[i : i + 1], matrices, 5, label_mask=mask[i : i + 1]) for i in range(3)]
    )
    for _ in range(3):
        assert torch.equal(ours(scores, images, matrices, 5, label_mask=mask), alone)


@pytest.mark.parametrize(
    "matrices, message",
    [
        (torch.zeros(2, 3, 3, dtype=torch.float64), "compat_matrices must have dtype Float"),
        (torch.zeros(1, 3, 3), r"compat_matrices must be \[2, L, L\] = \[2, 3, 3\]"),
        (torch.zeros(2, 4, 3), r"compat_matrices must be \[2, L, L\]"),
        (torch.full((2, 3, 3), float("nan")), "compat_matrices contains NaN or infinite values"),
    ],
)
def test_bad_compat_matrices_raise_clear_errors(matrices, message):
    images = photo_batch(6, 7)[:1]
    lattices = rrm_ops.crf_lattices(images)
    with pytest.raises(RuntimeError, match=message):
        rrm_ops.mean_field(torch.zeros(1, 3, 6, 7), lattices, compat_matrices=matrices)


def test_more_present_labels_than_the_matrix_slots_raise_a_clear_error():
    images = photo_batch(6, 7)[:1]
    lattices = rrm_ops.crf_lattices(images)
    with pytest.raises(RuntimeError, match="compat_matrices supports at most 64 present labels per image, got 65"):
        rrm_ops.mean_field(torch.zeros(1, 65, 6, 7), lattices, compat_matrices=torch.zeros(2, 65, 65))


def test_registered_op_with_compat_matrices_passes_opcheck():
    images = photo_batch(9, 11)[:2]
    lattices = rrm_ops.crf_lattices(images)
    unary = rrm_ops.unary_from_scores(torch.rand(2, 3, 9, 11)).flatten(2)
    args = (unary, None, lattices.gaussian.tensors.as_tuple(), lattices.bilateral.tensors.as_tuple(), 1.0, 1.0, 2,
            symmetric_matrices(3, seed=0))
    torch.library.opcheck(torch.ops.rrm_ops.dense_crf_meanfield, args)
