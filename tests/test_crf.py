"""The dense CRF op (docs/design.md#dense-crf) against pydensecrf on real photographs, and its contracts."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as sample_images
from skimage.transform import resize

import rrm_ops
from op_arguments import DENSE_CRF
from reference.crf_ref import pydensecrf_inference

TRAINING = dict(gaussian_sxy=3.0, gaussian_compat=3.0, bilateral_sxy=80.0, bilateral_srgb=13.0, bilateral_compat=10.0)
INFERENCE = dict(gaussian_sxy=3.0, gaussian_compat=3.0, bilateral_sxy=83.0, bilateral_srgb=5.0, bilateral_compat=4.0)
PARAMETER_SETS = {"training": TRAINING, "inference": INFERENCE}
# Non-square, odd and even sizes; each with its own photograph.
SIZES = [(40, 57, "astronaut"), (63, 48, "chelsea"), (97, 130, "coffee")]


def resized_photo(name: str, height: int, width: int) -> np.ndarray:
    """uint8 [height, width, 3]: a scikit-image sample photograph resized (not cropped)."""
    image = getattr(sample_images, name)()[..., :3]
    resized = resize(image, (height, width), order=1, preserve_range=True, anti_aliasing=True)
    return np.ascontiguousarray(np.round(resized).astype(np.uint8))


def smooth_scores(labels: int, height: int, width: int, seed: int) -> np.ndarray:
    """float32 [labels, height, width] in [0, 1]: smooth random class maps like upsampled CAMs,
    not summing to 1, with many values below pydensecrf's 1e-5 clip."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, labels, max(2, height // 10), max(2, width // 10), generator=generator)
    fine = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
    return (fine**6).numpy().astype(np.float32)


def ours(scores: np.ndarray, image: np.ndarray, **kwargs) -> np.ndarray:
    return rrm_ops.dense_crf(torch.from_numpy(scores)[None], torch.from_numpy(image)[None], **kwargs)[0].numpy()


@pytest.mark.parametrize("parameters", ["training", "inference"])
@pytest.mark.parametrize("labels", [2, 4, 21])
@pytest.mark.parametrize("height, width, name", SIZES)
def test_matches_pydensecrf_on_photographs(height, width, name, labels, parameters):
    image = resized_photo(name, height, width)
    scores = smooth_scores(labels, height, width, seed=height * labels)
    for n_iter in (0, 1, 5, 10):
        theirs = pydensecrf_inference(scores, image, n_iter=n_iter, **PARAMETER_SETS[parameters])
        mine = ours(scores, image, n_iter=n_iter, **PARAMETER_SETS[parameters])
        assert mine.shape == theirs.shape == (labels, height, width)
        assert np.mean(mine.argmax(0) == theirs.argmax(0)) >= 0.999, n_iter
        # Only the rounding of a few float operations differs from pydensecrf
        # (docs/design.md#agreement-with-pydensecrf): measured <= 2.3e-6 over this grid, so 1e-4
        # leaves room for other compilers and still catches any change to the computation.
        assert np.abs(mine - theirs).max() <= 1e-4, n_iter


def test_more_labels_than_the_unrolled_slot_counts_match_pydensecrf():
    # 30 labels take 32 slots, above the CPU's compile-time slot counts (up to 24): the update
    # runs the device-generic body pixel by pixel, the code CUDA runs.
    image = resized_photo("astronaut", 40, 57)
    scores = smooth_scores(30, 40, 57, seed=30)
    theirs = pydensecrf_inference(scores, image, n_iter=5, **TRAINING)
    mine = ours(scores, image, n_iter=5, **TRAINING)
    assert np.mean(mine.argmax(0) == theirs.argmax(0)) >= 0.999
    assert np.abs(mine - theirs).max() <= 1e-4


@pytest.mark.parametrize("name, height, width", [("coffee", 37, 45), ("chelsea", 321, 321)])
def test_pixel_counts_off_a_multiple_of_four_match_pydensecrf(name, height, width):
    # pydensecrf's x86 build pads each image's points to a multiple of four with zero-feature
    # points whose lattice vertices join the blur. Against a lattice without them, its Q at
    # L = 21 differed by 0.017 (coffee, 5 iterations) and 0.0167 (chelsea, 10 iterations).
    image = resized_photo(name, height, width)
    scores = smooth_scores(21, height, width, seed=30)
    for n_iter in (5, 10):
        theirs = pydensecrf_inference(scores, image, n_iter=n_iter, **TRAINING)
        mine = ours(scores, image, n_iter=n_iter, **TRAINING)
        assert np.mean(mine.argmax(0) == theirs.argmax(0)) >= 0.999, n_iter
        assert np.abs(mine - theirs).max() <= 1e-4, n_iter


def test_presets_are_rrms_two_crf_settings_and_cannot_change():
    assert rrm_ops.TRAINING_CRF.as_kwargs() == {"n_iter": 10, **TRAINING}
    assert rrm_ops.INFERENCE_CRF.as_kwargs() == {"n_iter": 10, **INFERENCE}
    with pytest.raises(dataclasses.FrozenInstanceError):
        rrm_ops.TRAINING_CRF.bilateral_sxy = 60.0
    image = torch.from_numpy(resized_photo("coffee", 37, 45))[None]
    scores = torch.from_numpy(smooth_scores(3, 37, 45, seed=5))[None]
    default = rrm_ops.dense_crf(scores, image)
    assert torch.equal(default, rrm_ops.dense_crf(scores, image, **rrm_ops.TRAINING_CRF.as_kwargs()))
    assert not torch.equal(default, rrm_ops.dense_crf(scores, image, **rrm_ops.INFERENCE_CRF.as_kwargs()))


def test_the_pairwise_terms_change_the_result():
    image = resized_photo("astronaut", 40, 57)
    scores = smooth_scores(4, 40, 57, seed=3)
    moved = np.abs(ours(scores, image, n_iter=10) - ours(scores, image, n_iter=0)).max()
    assert moved > 0.1


def test_label_mask_equals_pydensecrf_on_the_present_labels():
    height, width, labels = 45, 61, 5
    names = ["astronaut", "rocket", "coffee"]
    images = np.stack([resized_photo(name, height, width) for name in names])
    scores = np.stack([smooth_scores(labels, height, width, seed=10 + i) for i in range(3)])
    mask = np.array(
        [[True, False, True, True, False], [True, True, False, False, False], [False, False, False, False, True]]
    )
    q = rrm_ops.dense_crf(
        torch.from_numpy(scores), torch.from_numpy(images), n_iter=5, label_mask=torch.from_numpy(mask)
    ).numpy()
    for i in range(3):
        assert (q[i][~mask[i]] == 0).all()
        alone = pydensecrf_inference(scores[i][mask[i]], images[i], n_iter=5)
        assert np.abs(q[i][mask[i]] - alone).max() <= 1e-4
        np.testing.assert_allclose(q[i][mask[i]].sum(0), 1.0, atol=1e-5)


def test_an_image_without_present_labels_gets_zeros():
    image = torch.from_numpy(resized_photo("chelsea", 20, 24))[None].expand(2, -1, -1, -1)
    scores = torch.from_numpy(smooth_scores(3, 20, 24, seed=1))[None].expand(2, -1, -1, -1)
    mask = torch.tensor([[False, False, False], [True, True, False]])
    q = rrm_ops.dense_crf(scores, image, n_iter=3, label_mask=mask)
    assert (q[0] == 0).all()
    assert torch.equal(q[1], rrm_ops.dense_crf(scores[1:], image[1:], n_iter=3, label_mask=mask[1:])[0])


def photo_batch(height: int, width: int) -> torch.Tensor:
    names = ["astronaut", "chelsea", "coffee"]
    return torch.from_numpy(np.stack([resized_photo(name, height, width) for name in names]))


def test_batched_equals_per_image_bitwise():
    # Batches run whole images concurrently on the CPU; repeat to give races a chance to show.
    images = torch.cat([photo_batch(37, 52), photo_batch(37, 52)[:1]])
    scores = torch.from_numpy(np.stack([smooth_scores(6, 37, 52, seed=i) for i in range(4)]))
    mask = torch.tensor(
        [[True] * 6, [True, False, True, False, True, False], [False, True] + [False] * 4, [True] * 3 + [False] * 3]
    )
    alone = torch.cat(
        [rrm_ops.dense_crf(scores[i : i + 1], images[i : i + 1], label_mask=mask[i : i + 1]) for i in range(4)]
    )
    for _ in range(5):
        assert torch.equal(rrm_ops.dense_crf(scores, images, label_mask=mask), alone)


def crf_with_threads(threads: list[int], scores: torch.Tensor, images: torch.Tensor) -> list[torch.Tensor]:
    """dense_crf(scores, images) once under each thread count in turn (then restored)."""
    before = torch.get_num_threads()
    results = []
    try:
        for count in threads:
            torch.set_num_threads(count)
            results.append(rrm_ops.dense_crf(scores, images))
    finally:
        torch.set_num_threads(before)
    return results


def test_thread_count_does_not_change_bits():
    images = photo_batch(41, 33)
    scores = torch.from_numpy(np.stack([smooth_scores(21, 41, 33, seed=i) for i in range(3)]))
    single, double, again = crf_with_threads([1, 2, 2], scores, images)
    assert torch.equal(single, double)
    assert torch.equal(double, again)


@pytest.mark.parametrize("labels", [3, 21])
def test_one_image_split_among_threads_keeps_its_bits(labels):
    # The CPU splats an image of 257 x 265 = 68,105 pixels as 2 stripes, each into partial sums
    # of its own that are added in stripe order; 1, 2 and 3 threads share the stripes out
    # differently. Stripe 1 starts at pixel 34,052, not a multiple of the 8-pixel vectors, so
    # its first 4 pixels are updated one by one. None of this may change the bits.
    image = torch.from_numpy(resized_photo("coffee", 257, 265))[None]
    scores = torch.from_numpy(smooth_scores(labels, 257, 265, seed=labels))[None]
    single, double, triple = crf_with_threads([1, 2, 3], scores, image)
    assert torch.equal(single, double)
    assert torch.equal(single, triple)


def test_prebuilt_lattices_and_unary_entry_equal_the_one_call_op():
    # dense_crf builds one Gaussian lattice and tiles it over the batch; crf_lattices builds it
    # batched, so this also checks that the tiling is exact. 37 x 45 pixels is not a multiple
    # of 4: both must add pydensecrf's padding points, without which Q differs here.
    images = photo_batch(37, 45)
    scores = torch.from_numpy(np.stack([smooth_scores(4, 37, 45, seed=i) for i in range(3)]))
    expected = rrm_ops.dense_crf(scores, images, n_iter=5, **TRAINING)
    unary = rrm_ops.unary_from_scores(scores)
    assert torch.equal(rrm_ops.dense_crf(None, images, unary=unary, n_iter=5, **TRAINING), expected)
    assert torch.equal(rrm_ops.dense_crf(unary=unary, image=images, n_iter=5, **TRAINING), expected)
    lattices = rrm_ops.crf_lattices(images, gaussian_sxy=3.0, bilateral_sxy=80.0, bilateral_srgb=13.0)
    refined = rrm_ops.mean_field(unary, lattices, n_iter=5, gaussian_compat=3.0, bilateral_compat=10.0)
    assert torch.equal(refined, expected)
    plain = dataclasses.replace(lattices, bilateral=rrm_ops.Lattice(rrm_ops.bilateral_features(images, 80.0, 13.0)))
    unpadded = rrm_ops.mean_field(unary, plain, n_iter=5, gaussian_compat=3.0, bilateral_compat=10.0)
    assert (unpadded - expected).abs().max() > 1e-5


def test_dense_crf_without_an_image_says_so():
    with pytest.raises(TypeError, match="needs the image"):
        rrm_ops.dense_crf(unary=torch.zeros(1, 2, 4, 4))


def test_reused_gaussian_lattices_give_the_bits_of_a_fresh_build():
    # On the CPU the Gaussian lattice of a (batch, size, sxy) is kept for later calls; other
    # sizes, batches and sigmas in between must not be served a wrong one.
    first, second = photo_batch(23, 31)[:2], photo_batch(31, 23)[:2]
    scores_first = torch.from_numpy(np.stack([smooth_scores(3, 23, 31, seed=i) for i in range(2)]))
    scores_second = torch.from_numpy(np.stack([smooth_scores(3, 31, 23, seed=i) for i in range(2)]))
    rrm_ops._C.clear_gaussian_lattice_cache()
    fresh = rrm_ops.dense_crf(scores_first, first)
    fresh_other_sigma = rrm_ops.dense_crf(scores_first, first, gaussian_sxy=5.0)
    fresh_one = rrm_ops.dense_crf(scores_first[:1], first[:1])
    rrm_ops._C.clear_gaussian_lattice_cache()
    rrm_ops.dense_crf(scores_second, second)
    assert torch.equal(rrm_ops.dense_crf(scores_first, first), fresh)
    assert torch.equal(rrm_ops.dense_crf(scores_first, first, gaussian_sxy=5.0), fresh_other_sigma)
    assert torch.equal(rrm_ops.dense_crf(scores_first[:1], first[:1]), fresh_one)
    assert torch.equal(rrm_ops.dense_crf(scores_first, first), fresh)


def test_input_layouts_and_dtypes_agree():
    images = photo_batch(22, 31)
    scores = torch.from_numpy(np.stack([smooth_scores(3, 22, 31, seed=i) for i in range(3)]))
    expected = rrm_ops.dense_crf(scores, images)
    assert torch.equal(rrm_ops.dense_crf(scores, images.permute(0, 3, 1, 2)), expected)
    assert torch.equal(rrm_ops.dense_crf(scores, images.permute(0, 3, 1, 2).contiguous()), expected)
    non_contiguous = scores.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    assert torch.equal(rrm_ops.dense_crf(non_contiguous, images), expected)
    # float64 scores: the log is taken in float64, as pydensecrf's unary_from_softmax does.
    double = rrm_ops.dense_crf(scores.double(), images)
    assert double.dtype == torch.float32
    assert (double - expected).abs().max() <= 1e-5


def test_scores_above_one_act_as_one():
    images = photo_batch(16, 18)[:1]
    scores = torch.from_numpy(smooth_scores(3, 16, 18, seed=2))[None]
    scores = scores / scores.max() * 3
    assert scores.max() > 1
    assert torch.equal(rrm_ops.dense_crf(scores, images), rrm_ops.dense_crf(scores.clamp(max=1), images))


def test_rows_sum_to_one_and_n_iter_zero_is_the_unary_softmax():
    images = photo_batch(19, 23)[:1]
    scores = torch.from_numpy(smooth_scores(5, 19, 23, seed=4))[None]
    q = rrm_ops.dense_crf(scores, images, n_iter=7)
    torch.testing.assert_close(q.sum(1), torch.ones(1, 19, 23), rtol=0, atol=1e-6)
    softmax = torch.softmax(-rrm_ops.unary_from_scores(scores), dim=1)
    torch.testing.assert_close(rrm_ops.dense_crf(scores, images, n_iter=0), softmax, rtol=0, atol=1e-6)


def test_one_label_and_one_pixel():
    images = photo_batch(8, 9)[:2]
    assert torch.equal(rrm_ops.dense_crf(torch.rand(2, 1, 8, 9), images), torch.ones(2, 1, 8, 9))
    q = rrm_ops.dense_crf(torch.tensor([0.2, 0.7]).view(1, 2, 1, 1), images[:1, :1, :1], n_iter=3)
    assert q.shape == (1, 2, 1, 1) and q[0, 1, 0, 0] > 0.5


def test_empty_inputs_give_empty_outputs():
    empty_batch = rrm_ops.dense_crf(torch.rand(0, 3, 5, 6), torch.zeros(0, 5, 6, 3, dtype=torch.uint8))
    assert empty_batch.shape == (0, 3, 5, 6) and empty_batch.dtype == torch.float32
    no_pixels = rrm_ops.dense_crf(torch.rand(2, 3, 0, 6), torch.zeros(2, 0, 6, 3, dtype=torch.uint8))
    assert no_pixels.shape == (2, 3, 0, 6)


def _inputs(labels: int = 3, height: int = 6, width: int = 7):
    return torch.rand(2, labels, height, width), torch.zeros(2, height, width, 3, dtype=torch.uint8)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda s, i: (s.index_fill(3, torch.tensor([2]), float("nan")), i), "scores contains NaN or infinite"),
        (lambda s, i: (s.index_fill(3, torch.tensor([2]), float("inf")), i), "scores contains NaN or infinite"),
        (lambda s, i: (s - 0.5, i), "scores must be non-negative"),
        (lambda s, i: (s[:, :0], i), r"at least one label \(L >= 1\)"),
        (lambda s, i: (s[0], i), r"scores must be 4-D \[B, L, H, W\]"),
        (lambda s, i: (s.int(), i), "scores must be float32 or float64"),
        (lambda s, i: (s, i.float()), "image must have dtype uint8"),
        (lambda s, i: (s, i[0]), r"image must be uint8 \[B, H, W, 3\] or \[B, 3, H, W\]"),
        (lambda s, i: (s, torch.zeros(2, 6, 7, 4, dtype=torch.uint8)), "with the H x W = 6 x 7 of scores"),
        (lambda s, i: (s, i[:, :5]), "with the H x W = 6 x 7 of scores"),
        (lambda s, i: (s, i.transpose(1, 2)), "with the H x W = 6 x 7 of scores"),
        (lambda s, i: (s, i[:1]), "image has batch size 1 but scores has 2"),
    ],
)
def test_bad_scores_and_images_raise_clear_errors(make, message):
    scores, image = make(*_inputs())
    with pytest.raises(RuntimeError, match=message):
        rrm_ops.dense_crf(scores, image)


def test_bad_options_raise_clear_errors():
    scores, image = _inputs()
    with pytest.raises(RuntimeError, match="n_iter must be >= 0, got -1"):
        rrm_ops.dense_crf(scores, image, n_iter=-1)
    with pytest.raises(RuntimeError, match="gaussian_sxy must be a positive finite number"):
        rrm_ops.dense_crf(scores, image, gaussian_sxy=0.0)
    with pytest.raises(RuntimeError, match="bilateral_srgb must be a positive finite number"):
        rrm_ops.dense_crf(scores, image, bilateral_srgb=float("nan"))
    with pytest.raises(RuntimeError, match="bilateral_compat must be a finite number"):
        rrm_ops.dense_crf(scores, image, bilateral_compat=float("inf"))
    with pytest.raises(RuntimeError, match=r"label_mask must be \[B, L\] = \[2, 3\]"):
        rrm_ops.dense_crf(scores, image, label_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="label_mask must have dtype bool"):
        rrm_ops.dense_crf(scores, image, label_mask=torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="exactly one of scores and unary, got both"):
        rrm_ops.dense_crf(scores, image, unary=scores)
    with pytest.raises(RuntimeError, match="exactly one of scores and unary, got neither"):
        rrm_ops.dense_crf(None, image)
    with pytest.raises(RuntimeError, match="unary contains NaN or infinite"):
        rrm_ops.dense_crf(None, image, unary=torch.full_like(scores, float("inf")))
    with pytest.raises(TypeError, match="scores must be a torch.Tensor"):
        rrm_ops.dense_crf(scores.numpy(), image)


def test_mean_field_rejects_mismatched_lattices_and_unary():
    lattices = rrm_ops.crf_lattices(torch.zeros(2, 6, 7, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="H, W = 6, 7 of the lattices"):
        rrm_ops.mean_field(torch.zeros(2, 3, 7, 6), lattices)
    with pytest.raises(RuntimeError, match="gaussian lattice must be built over the B = 1 images"):
        rrm_ops.mean_field(torch.zeros(1, 3, 6, 7), lattices)
    with pytest.raises(RuntimeError, match="unary must have dtype Float"):
        rrm_ops.mean_field(torch.zeros(2, 3, 6, 7, dtype=torch.float64), lattices)
    with pytest.raises(TypeError, match="image must have dtype uint8"):
        rrm_ops.crf_lattices(torch.zeros(1, 6, 7, 3))


def test_registered_kernels():
    # The mean field has a kernel per device; dense_crf, a composite, one kernel for all of them.
    name = "rrm_ops::dense_crf_meanfield"
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU")
    if torch.cuda.is_available():
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")
    name = "rrm_ops::dense_crf"
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CompositeExplicitAutograd")
    assert not torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU")
    assert not torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_computed_kernel_for_dispatch_key(name, key)
    for name in ("rrm_ops::dense_crf", "rrm_ops::dense_crf_meanfield"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "Meta")


def test_registered_ops_pass_opcheck():
    images = photo_batch(9, 11)[:2]
    scores = torch.rand(2, 3, 9, 11)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    torch.library.opcheck(torch.ops.rrm_ops.dense_crf, (scores, images),
                          {**DENSE_CRF, "n_iter": 2, "label_mask": mask})
    lattices = rrm_ops.crf_lattices(images)
    args = (
        rrm_ops.unary_from_scores(scores).flatten(2),
        mask,
        lattices.gaussian.tensors.as_tuple(),
        lattices.bilateral.tensors.as_tuple(),
        3.0,
        10.0,
        2,
        None,
    )
    torch.library.opcheck(torch.ops.rrm_ops.dense_crf_meanfield, args)


def test_compiles_with_torch_compile():
    images = photo_batch(12, 14)[:1]
    scores = torch.rand(1, 3, 12, 14)

    def refine(s, image):
        return rrm_ops.dense_crf(s * 0.5, image, n_iter=3).argmax(1)

    compiled = torch.compile(refine, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(scores, images), refine(scores, images))
