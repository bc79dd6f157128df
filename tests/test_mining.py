"""reliable_region_labels against the numpy + pydensecrf reference of docs/design.md#reliable-region-mining."""

import dataclasses

import numpy as np
import pytest
import torch

import rrm_ops
from conftest import photo
from op_arguments import MINING
from reference.mining_ref import reliable_region_labels_ref


def _blob(height: int, width: int, cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2)).astype(np.float32)


def _cams(height: int, width: int, classes: int, present: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cams = np.zeros((classes, height, width), np.float32)
    for c in present:
        cams[c] = 3 * _blob(height, width, rng.uniform(0, height), rng.uniform(0, width), rng.uniform(5, 15))
    labels = np.zeros(classes, np.float32)
    labels[present] = 1
    return cams, labels


CASES = [
    ("astronaut", 20, [14]),
    ("chelsea", 20, [7, 11]),  # blobs may overlap
    ("coffee", 20, [0, 4, 19]),
    ("astronaut", 20, list(range(20))),  # all classes present
    ("chelsea", 3, [0, 2]),
]


@pytest.mark.parametrize("name, classes, present", CASES)
def test_matches_reference(name, classes, present):
    image = photo(name, 60, 100, 48, 64)
    cams, labels = _cams(48, 64, classes, present, seed=len(present))
    ours = rrm_ops.reliable_region_labels(torch.from_numpy(cams)[None], torch.from_numpy(labels)[None],
                                          torch.from_numpy(image)[None])
    expected = reliable_region_labels_ref(cams, labels, image)
    agreement = (ours[0].numpy() == expected).mean()
    assert agreement >= 0.995, agreement


def test_the_crf_parameters_reach_both_mean_fields():
    image = photo("chelsea", 60, 100, 48, 64)
    cams, labels = _cams(48, 64, 20, [7, 11], seed=2)
    args = torch.from_numpy(cams)[None], torch.from_numpy(labels)[None], torch.from_numpy(image)[None]
    crf = dataclasses.replace(rrm_ops.INFERENCE_CRF, n_iter=5)
    ours = rrm_ops.reliable_region_labels(*args, crf=crf, return_details=True)
    expected, q_low, q_high, _ = reliable_region_labels_ref(cams, labels, image, return_details=True,
                                                           crf=crf.as_kwargs())
    assert (ours.labels[0].numpy() == expected).mean() >= 0.995
    assert (ours.q_low[0].numpy().argmax(0) == q_low.argmax(0)).mean() >= 0.995
    assert (ours.q_high[0].numpy().argmax(0) == q_high.argmax(0)).mean() >= 0.995
    training = rrm_ops.reliable_region_labels(*args, return_details=True)
    assert not torch.equal(training.q_low, ours.q_low)
    explicit = rrm_ops.reliable_region_labels(*args, crf=rrm_ops.TRAINING_CRF, return_details=True)
    assert all(torch.equal(a, b) for a, b in zip(explicit, training))


def test_bad_crf_parameters_raise_clear_errors():
    cams, labels, images = _small_batch()
    with pytest.raises(TypeError, match="crf must be a CrfParams"):
        rrm_ops.reliable_region_labels(cams, labels, images, crf=rrm_ops.TRAINING_CRF.as_kwargs())
    for change, message in ((dict(n_iter=-1), r"n_iter must be in 0\.\.10000, got -1"),
                            (dict(n_iter=10_001), r"n_iter must be in 0\.\.10000, got 10001"),
                            (dict(bilateral_srgb=0.0), "bilateral_srgb must be a positive finite number"),
                            (dict(gaussian_compat=float("nan")), "gaussian_compat must be a finite number")):
        with pytest.raises(ValueError, match=message):
            rrm_ops.reliable_region_labels(cams, labels, images, crf=dataclasses.replace(rrm_ops.TRAINING_CRF,
                                                                                          **change))


def test_class_whose_cam_never_exceeds_the_floor():
    image = photo("coffee", 30, 30, 40, 40)
    cams, labels = _cams(40, 40, 5, [1, 3], seed=4)
    cams[3] = 0.0  # present, but its CAM never exceeds cam_floor (the public release crashes here)
    ours = rrm_ops.reliable_region_labels(torch.from_numpy(cams)[None], torch.from_numpy(labels)[None],
                                          torch.from_numpy(image)[None])
    expected = reliable_region_labels_ref(cams, labels, image)
    assert (ours[0].numpy() == expected).mean() >= 0.995
    assert not (ours == 4).any()


def test_batched_equals_per_image_and_details():
    images = np.stack([photo("astronaut", 0, 0, 32, 36), photo("chelsea", 0, 0, 32, 36)])
    cams = np.stack([_cams(32, 36, 4, [0], seed=1)[0], _cams(32, 36, 4, [1, 2], seed=2)[0]])
    labels = np.array([[1, 0, 0, 0], [0, 1, 1, 0]], np.float32)
    args = torch.from_numpy(cams), torch.from_numpy(labels), torch.from_numpy(images)
    details = rrm_ops.reliable_region_labels(*args, return_details=True)
    for i in range(2):
        alone = rrm_ops.reliable_region_labels(*(a[i : i + 1] for a in args))
        assert torch.equal(alone, details.labels[i : i + 1])
    assert details.q_low.shape == (2, 5, 32, 36)
    assert torch.all(details.q_low[0, 2:] == 0)  # absent classes
    assert not (details.labels.ne(255) & ~details.sure).any()


@pytest.mark.parametrize("height, width", [(1, 1), (2, 3)])
def test_tiny_images_all_zero_cams_and_no_class(height, width):
    image = torch.zeros(1, height, width, 3, dtype=torch.uint8)
    for labels in (torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2)):
        out = rrm_ops.reliable_region_labels(torch.zeros(1, 2, height, width), labels, image)
        assert out.shape == (1, height, width)
        assert set(out.unique().tolist()) <= {0, 1, 2, 255}
    no_class = rrm_ops.reliable_region_labels(torch.zeros(1, 2, height, width), torch.zeros(1, 2), image)
    assert torch.all(no_class == 0)  # documented: background only


@pytest.mark.parametrize(
    "cams, labels, message",
    [
        (-torch.ones(1, 2, 4, 4), torch.ones(1, 2), "finite and >= 0"),
        (torch.full((1, 2, 4, 4), float("nan")), torch.ones(1, 2), "finite and >= 0"),
        (torch.ones(1, 2, 4, 4), torch.ones(1, 3), "cls_labels must be"),
        (torch.ones(1, 2, 4, 5), torch.ones(1, 2), r"images must be \[B, H, W, 3\] or \[B, 3, H, W\]"),
        (torch.ones(1, 2, 4, 4), torch.full((1, 2), 0.5), "only 0 and 1"),
    ],
)
def test_bad_inputs_raise_clear_errors(cams, labels, message):
    with pytest.raises(ValueError, match=message):
        rrm_ops.reliable_region_labels(cams, labels, torch.zeros(1, 4, 4, 3, dtype=torch.uint8))


def test_registered_kernels():
    name = "rrm_ops::reliable_region_labels"
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU")
    if torch.cuda.is_available():
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "Meta")


def _small_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images = np.stack([photo("astronaut", 0, 0, 14, 17), photo("coffee", 0, 0, 14, 17)])
    cams = np.stack([_cams(14, 17, 4, [2], seed=1)[0], _cams(14, 17, 4, [0, 1, 3], seed=2)[0]])
    labels = np.array([[0, 0, 1, 0], [1, 1, 0, 1]], np.float32)
    return torch.from_numpy(cams), torch.from_numpy(labels), torch.from_numpy(images)


def test_fake_kernel_shapes_and_opcheck():
    cams, labels, images = _small_batch()
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) for t in (cams, labels, images)]
        out_labels, sure, q = torch.ops.rrm_ops.reliable_region_labels(*fake, **MINING)
    assert (out_labels.shape, out_labels.dtype) == ((2, 14, 17), torch.int64)
    assert (sure.shape, sure.dtype) == ((2, 14, 17), torch.bool)
    assert (q.shape, q.dtype) == ((2, 2, 5, 14, 17), torch.float32)
    torch.library.opcheck(torch.ops.rrm_ops.reliable_region_labels, (cams, labels, images), MINING)


def test_without_q_the_labels_are_the_same_and_q_is_empty():
    # Without return_q the op never spreads Q over all C+1 labels; the labels must not change.
    cams, labels, images = _small_batch()
    full = torch.ops.rrm_ops.reliable_region_labels(cams, labels, images, **MINING)
    without_q = {**MINING, "return_q": False}
    lean = torch.ops.rrm_ops.reliable_region_labels(cams, labels, images, **without_q)
    assert torch.equal(lean[0], full[0]) and torch.equal(lean[1], full[1])
    assert lean[2].shape == (2, 2, 0, 14, 17)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) for t in (cams, labels, images)]
        assert torch.ops.rrm_ops.reliable_region_labels(*fake, **without_q)[2].shape == (2, 2, 0, 14, 17)
    torch.library.opcheck(torch.ops.rrm_ops.reliable_region_labels, (cams, labels, images), without_q)


def test_an_image_beside_one_of_more_labels_gives_bitwise_its_labels_alone():
    # The CRFs run in as many slots as the batch's largest present count needs: 8 here (5
    # classes and the background), where the first image alone needs 4. Its padding slots have
    # Q = 0 and add exact zeros, so nothing of it changes.
    images = np.stack([photo("astronaut", 0, 0, 14, 17), photo("coffee", 0, 0, 14, 17)])
    cams = np.stack([_cams(14, 17, 5, [2], seed=1)[0], _cams(14, 17, 5, [0, 1, 2, 3, 4], seed=2)[0]])
    labels = np.array([[0, 0, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    args = torch.from_numpy(cams), torch.from_numpy(labels), torch.from_numpy(images)
    batch = rrm_ops.reliable_region_labels(*args, return_details=True)
    alone = rrm_ops.reliable_region_labels(*(a[:1] for a in args), return_details=True)
    for got, expected in zip(batch, alone):
        assert torch.equal(got[:1], expected)


@pytest.mark.parametrize("compact_labels", [True, False])
def test_compact_labels_is_deprecated_and_changes_nothing(compact_labels):
    args = _small_batch()
    expected = rrm_ops.reliable_region_labels(*args, return_details=True)
    with pytest.warns(FutureWarning, match="compact_labels is deprecated and has no effect"):
        got = rrm_ops.reliable_region_labels(*args, return_details=True, compact_labels=compact_labels)
    for actual, wanted in zip(got, expected):
        assert torch.equal(actual, wanted)


@pytest.mark.parametrize("crf", [rrm_ops.TRAINING_CRF, dataclasses.replace(rrm_ops.INFERENCE_CRF, n_iter=4)])
def test_op_equals_two_mean_fields_on_shared_lattices(crf):
    # The two-group mean field equals two separate runs of the CRF family's mean field. The op
    # computes the unary with the log and pow of common/float_math.h per pixel, torch with its
    # vectorised log/pow, which may differ in the last bit; Q then differs by about 1e-7.
    cams, labels, images = _small_batch()
    details = rrm_ops.reliable_region_labels(cams, labels, images, crf=crf, return_details=True)
    present = labels.bool()
    normalised = cams * present[:, :, None, None]
    normalised = normalised / (normalised.flatten(2).amax(dim=2)[:, :, None, None] + 1e-5)
    lattices = rrm_ops.crf_lattices(images, gaussian_sxy=crf.gaussian_sxy, bilateral_sxy=crf.bilateral_sxy,
                                    bilateral_srgb=crf.bilateral_srgb)
    mask = torch.cat([torch.ones_like(present[:, :1]), present], dim=1)
    for alpha, q in ((4.0, details.q_low), (32.0, details.q_high)):
        scores = torch.cat([(1 - normalised.amax(dim=1, keepdim=True)).pow(alpha), normalised], dim=1)
        expected = rrm_ops.mean_field(rrm_ops.unary_from_scores(scores), lattices, n_iter=crf.n_iter,
                                      gaussian_compat=crf.gaussian_compat, bilateral_compat=crf.bilateral_compat,
                                      label_mask=mask)
        torch.testing.assert_close(q, expected, rtol=0, atol=1e-5)
        assert (q.argmax(1) == expected.argmax(1)).float().mean() > 0.999
