"""The dense energy loss (docs/design.md#dense-energy-loss) against the numpy reference, and its contracts."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import rrm_ops
from conftest import photo
from reference.energy_loss_ref import dense_energy_loss_ref


def energy_inputs(batch: int, classes: int, height: int, width: int, seed: int = 0):
    """Real photographs, smooth random softmax maps, rois with a padded border, seg_label with 255 regions.

    Returns images float32 [N, 3, H, W], probs float64 [N, K, H, W], rois float32 [N, H, W],
    seg_label uint8 [N, 1, H, W].
    """
    generator = torch.Generator().manual_seed(seed)
    names = ["astronaut", "chelsea", "coffee"]
    images = torch.stack(
        [torch.from_numpy(photo(names[i % 3], 40 + 7 * i, 120, height, width)).permute(2, 0, 1) for i in range(batch)]
    ).float()
    coarse = torch.randn(batch, classes, height // 6 + 1, width // 6 + 1, generator=generator, dtype=torch.float64)
    logits = F.interpolate(coarse * 4, size=(height, width), mode="bilinear", align_corners=False)
    probs = torch.softmax(logits, dim=1)
    rois = torch.zeros(batch, height, width)
    for i in range(batch):  # the crop sits at a different place in each padded image
        rois[i, 3 + i : height - 5, 2 : width - 4 - 2 * i] = 1
    seg_label = torch.randint(0, classes, (batch, 1, height, width), generator=generator, dtype=torch.uint8)
    seg_label[:, :, height // 3 : height // 2] = 255
    seg_label[:, :, :, : width // 4] = 255
    return images, probs, rois, seg_label


def reference(images, probs, rois, seg_label, **settings):
    """dense_energy_loss_ref on the torch inputs: (loss, grad_rrm, grad_exact) as float64 torch."""
    loss, grad_rrm, grad_exact = dense_energy_loss_ref(
        images.numpy(), probs.double().numpy(), rois.numpy(), seg_label.numpy(), **settings
    )
    return torch.tensor(loss, dtype=torch.float64), torch.from_numpy(grad_rrm), torch.from_numpy(grad_exact)


def loss_and_grad(images, probs, rois, seg_label, dtype=torch.float32, **settings):
    leaf = probs.detach().to(dtype).requires_grad_()
    loss = rrm_ops.dense_energy_loss(images, leaf, rois, seg_label, **settings)
    loss.backward()
    return loss.detach(), leaf.grad


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected).abs().max() / expected.abs().max()).item()


class LatticeOpCounter(TorchDispatchMode):
    """Counts calls of the registered lattice ops."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = {"lattice_build": 0, "lattice_filter": 0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in self.counts:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "classes, scale_factor, gate",
    [(21, 0.5, True), (4, 0.5, False), (3, 0.7, True), (1, 1.0, True), (6, 0.3, True)],
)
def test_loss_and_gradients_match_numpy_reference(classes, scale_factor, gate):
    images, probs, rois, seg_label = energy_inputs(3, classes, 61, 74, seed=classes)
    settings = dict(weight=1e-7, sigma_rgb=15.0, sigma_xy=100.0, scale_factor=scale_factor, gate=gate)
    loss_ref, grad_rrm_ref, grad_exact_ref = reference(images, probs, rois, seg_label, **settings)
    for gradient, grad_ref in (("rrm", grad_rrm_ref), ("exact", grad_exact_ref)):
        for dtype in (torch.float32, torch.float64):
            loss, grad = loss_and_grad(images, probs, rois, seg_label, dtype, gradient=gradient, **settings)
            assert relative_error(loss, loss_ref) <= 1e-4
            assert relative_error(grad, grad_ref) <= 1e-4
    # The two rules differ because W is not exactly symmetric, so the check above can tell them apart.
    assert relative_error(grad_exact_ref, grad_rrm_ref) > 1e-4


def test_matches_reference_with_rrm_hyper_parameters_at_training_size():
    images, probs, rois, seg_label = energy_inputs(2, 21, 160, 180)
    loss_ref, grad_rrm_ref, _ = reference(images, probs, rois, seg_label)
    loss, grad = loss_and_grad(images, probs, rois, seg_label)
    assert relative_error(loss, loss_ref) <= 1e-4
    assert relative_error(grad, grad_rrm_ref) <= 1e-4


def test_rrm_gradient_is_minus_two_weight_a_roi_over_n():
    images, probs, rois, seg_label = energy_inputs(2, 5, 40, 50)
    weight = 3e-4
    features = rrm_ops.bilateral_features(images, 20.0, 15.0)
    lattice = rrm_ops.Lattice(features)
    small = probs.float().requires_grad_()
    gate = rrm_ops.energy_gate(small.detach(), rois, seg_label[:, 0])
    rrm_ops.gated_dense_energy(lattice, small, rois, gate, weight=weight, gradient="rrm").backward()
    energy_a = gate[:, None] * lattice.filter(small.detach() * rois[:, None])
    expected = -2 * weight * energy_a * rois[:, None] / probs.shape[0]
    torch.testing.assert_close(small.grad, expected, rtol=1e-6, atol=0)


def test_rrm_backward_does_no_filtering_and_exact_one_transposed_pass():
    images, probs, rois, seg_label = energy_inputs(2, 21, 30, 36)
    for gradient, backward_filters in (("rrm", 0), ("exact", 1)):
        leaf = probs.float().requires_grad_()
        with LatticeOpCounter() as forward:
            loss = rrm_ops.dense_energy_loss(images, leaf, rois, seg_label, gradient=gradient)
        with LatticeOpCounter() as backward:
            loss.backward()
        # One lattice for the whole batch and one pass for all K channels.
        assert forward.counts == {"lattice_build": 1, "lattice_filter": 1}
        assert backward.counts == {"lattice_build": 0, "lattice_filter": backward_filters}


def test_exact_gradient_passes_gradcheck_with_a_fixed_gate():
    images, probs, rois, seg_label = energy_inputs(2, 3, 7, 9)
    lattice = rrm_ops.Lattice(rrm_ops.bilateral_features(images, 4.0, 30.0))
    gate = torch.rand(2, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    rois = rois.double()
    probs = probs.clone().requires_grad_()

    def energy(p):
        return rrm_ops.gated_dense_energy(lattice, p, rois, gate, weight=1.0, gradient="exact")

    assert torch.autograd.gradcheck(energy, (probs,))


@pytest.mark.parametrize("scale_factor", [0.5, 1.0])
def test_exact_loss_passes_gradcheck_through_the_downscale(scale_factor):
    # With gate=False the gate is the constant 1, so the finite differences see the same function.
    images, probs, rois, seg_label = energy_inputs(2, 3, 10, 13)
    probs = probs.clone().requires_grad_()

    def loss(p):
        return rrm_ops.dense_energy_loss(
            images, p, rois, None, weight=1.0, sigma_xy=8.0, sigma_rgb=30.0, scale_factor=scale_factor,
            gradient="exact", gate=False, check_values=False,
        )

    assert torch.autograd.gradcheck(loss, (probs,))


def test_gate_is_rrm_definition():
    probs = torch.tensor([[[[0.9, 0.2, 0.5]], [[0.1, 0.8, 0.5]]]])  # [1, 2, 1, 3]
    rois = torch.tensor([[[1.0, 1.0, 0.0]]])
    seg_label = torch.tensor([[[0, 255, 1]]])
    gate = rrm_ops.energy_gate(probs, rois, seg_label)
    torch.testing.assert_close(gate, torch.tensor([[[0.1, 1.0, 0.0]]]))


@pytest.mark.parametrize("gate", [True, False])
def test_loss_is_never_positive(gate):
    # S', the gate and every weight of the filter are non-negative, so the loss is minus a sum
    # of non-negative terms (docs/design.md#dense-energy-loss), whatever the probabilities.
    images, _, rois, seg_label = energy_inputs(3, 5, 24, 30)
    for seed in range(4):
        logits = torch.randn(3, 5, 24, 30, generator=torch.Generator().manual_seed(seed)) * (1 + 4 * seed)
        loss = rrm_ops.dense_energy_loss(images, logits.softmax(dim=1), rois, seg_label, weight=1.0, gate=gate)
        # Strictly negative: the rois and the 255 regions of seg_label leave terms that are not 0.
        assert loss < 0, (seed, loss)
    assert rrm_ops.dense_energy_loss(images, logits.softmax(dim=1), rois * 0, seg_label, gate=gate) == 0


def test_module_equals_functional_and_defaults_are_rrm():
    module = rrm_ops.DenseEnergyLoss()
    assert (module.weight, module.sigma_rgb, module.sigma_xy, module.scale_factor) == (1e-7, 15.0, 100.0, 0.5)
    assert (module.gradient, module.gate) == ("rrm", True)
    images, probs, rois, seg_label = energy_inputs(2, 4, 30, 34)
    probs = probs.float()
    expected = rrm_ops.dense_energy_loss(images, probs, rois, seg_label)
    assert torch.equal(module(images, probs, rois, seg_label), expected)
    assert "sigma_xy=100.0" in repr(module)


def test_batch_items_are_independent():
    images, probs, rois, seg_label = energy_inputs(3, 5, 30, 34)
    loss, grad = loss_and_grad(images, probs, rois, seg_label, gradient="exact")
    item_losses = []
    for i in range(3):
        item = slice(i, i + 1)
        loss_i, grad_i = loss_and_grad(images[item], probs[item], rois[item], seg_label[item], gradient="exact")
        torch.testing.assert_close(grad[item], grad_i / 3, rtol=1e-6, atol=0)
        item_losses.append(loss_i)
    torch.testing.assert_close(loss, sum(item_losses) / 3, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_probs_are_computed_in_float32(dtype):
    images, probs, rois, seg_label = energy_inputs(2, 4, 30, 34)
    probs = probs.to(dtype)
    loss, grad = loss_and_grad(images, probs, rois, seg_label, dtype)
    expected_loss, expected_grad = loss_and_grad(images, probs.float(), rois, seg_label)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert torch.equal(loss, expected_loss)
    assert torch.equal(grad, expected_grad.to(dtype))


def test_float64_probs_are_computed_in_float64():
    images, probs, rois, seg_label = energy_inputs(1, 3, 20, 24)
    loss, grad = loss_and_grad(images, probs, rois, seg_label, torch.float64)
    assert loss.dtype == torch.float64 and grad.dtype == torch.float64


def test_input_dtypes_of_images_rois_and_labels_do_not_matter():
    images, probs, rois, seg_label = energy_inputs(2, 4, 30, 34)
    probs = probs.float()
    expected = rrm_ops.dense_energy_loss(images, probs, rois, seg_label)
    other_dtypes = rrm_ops.dense_energy_loss(images.to(torch.uint8), probs, rois.bool(), seg_label.long())
    assert torch.equal(other_dtypes, expected)


def test_plain_dense_crf_loss_without_gate_ignores_seg_label():
    images, probs, rois, seg_label = energy_inputs(2, 4, 30, 34)
    probs = probs.float()
    without_labels = rrm_ops.dense_energy_loss(images, probs, rois, None, gate=False)
    assert torch.equal(rrm_ops.dense_energy_loss(images, probs, rois, seg_label, gate=False), without_labels)
    # All-unreliable labels make the gate 1 everywhere, which is the plain loss.
    all_ignored = torch.full_like(seg_label, 255)
    assert torch.equal(rrm_ops.dense_energy_loss(images, probs, rois, all_ignored), without_labels)


def test_deterministic_across_runs_and_thread_counts():
    images, probs, rois, seg_label = energy_inputs(2, 21, 80, 90)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = loss_and_grad(images, probs, rois, seg_label, gradient="exact")
        torch.set_num_threads(2)
        first = loss_and_grad(images, probs, rois, seg_label, gradient="exact")
        second = loss_and_grad(images, probs, rois, seg_label, gradient="exact")
    finally:
        torch.set_num_threads(threads)
    for run in (second, single):
        assert torch.equal(run[0], first[0]) and torch.equal(run[1], first[1])


def test_empty_batch_gives_zero_loss():
    probs = torch.empty(0, 3, 8, 8, requires_grad=True)
    loss = rrm_ops.dense_energy_loss(torch.empty(0, 3, 8, 8), probs, torch.empty(0, 8, 8), torch.empty(0, 1, 8, 8))
    loss.backward()
    assert loss.item() == 0 and probs.grad.shape == (0, 3, 8, 8)


@pytest.mark.parametrize("scale_factor", [0.0, -0.5, 1.5, float("nan")])
def test_scale_factor_outside_zero_one_is_rejected(scale_factor):
    with pytest.raises(ValueError, match=r"scale_factor must be in \(0, 1\]"):
        rrm_ops.DenseEnergyLoss(scale_factor=scale_factor)
    images, probs, rois, seg_label = energy_inputs(1, 2, 8, 8)
    with pytest.raises(ValueError, match=r"scale_factor must be in \(0, 1\]"):
        rrm_ops.dense_energy_loss(images, probs, rois, seg_label, scale_factor=scale_factor)


def test_scale_factor_that_shrinks_the_input_to_nothing_is_rejected():
    images, probs, rois, seg_label = energy_inputs(1, 2, 8, 8)
    with pytest.raises(ValueError, match="shrinks the 8x8 input to nothing"):
        rrm_ops.dense_energy_loss(images, probs, rois, seg_label, scale_factor=0.1)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(gradient="symmetric"), "gradient must be 'rrm' or 'exact'"),
        (dict(sigma_rgb=0.0), "sigma_rgb must be a positive"),
        (dict(sigma_xy=float("inf")), "sigma_xy must be a positive"),
        (dict(weight=float("nan")), "weight must be finite"),
    ],
)
def test_bad_settings_are_rejected(settings, message):
    with pytest.raises(ValueError, match=message):
        rrm_ops.DenseEnergyLoss(**settings)


@pytest.mark.parametrize(
    "argument, bad, message",
    [
        ("images", torch.zeros(2, 3, 8, 9), r"images must have shape \[2, 3, 8, 8\]"),
        ("images", torch.zeros(2, 8, 8, 3), r"images must have shape \[2, 3, 8, 8\]"),
        ("rois", torch.ones(2, 1, 8, 8), r"rois must have shape \[2, 8, 8\]"),
        ("rois", torch.ones(1, 8, 8), r"rois must have shape \[2, 8, 8\]"),
        ("seg_label", torch.zeros(2, 8, 8), r"seg_label must have shape \[2, 1, 8, 8\]"),
        ("probs", torch.full((2, 8, 8), 0.5), r"probs must be \[N, K, H, W\]"),
        ("probs", torch.zeros(2, 0, 8, 8), r"probs must be \[N, K, H, W\] with K >= 1"),
    ],
)
def test_mismatched_shapes_are_rejected(argument, bad, message):
    inputs = dict(zip(["images", "probs", "rois", "seg_label"], energy_inputs(2, 3, 8, 8)))
    inputs[argument] = bad
    with pytest.raises(ValueError, match=message):
        rrm_ops.dense_energy_loss(**inputs)


def test_gate_needs_seg_label():
    images, probs, rois, _ = energy_inputs(1, 2, 8, 8)
    with pytest.raises(ValueError, match="seg_label is required when gate=True"):
        rrm_ops.dense_energy_loss(images, probs, rois, None)


def test_module_without_seg_label_is_the_plain_loss_as_rloss_calls_it():
    images, probs, rois, seg_label = energy_inputs(2, 3, 16, 12)
    plain = rrm_ops.dense_energy_loss(images, probs, rois, None, gate=False)
    gated = rrm_ops.dense_energy_loss(images, probs, rois, seg_label)
    assert torch.equal(rrm_ops.DenseEnergyLoss()(images, probs, rois), plain)
    assert not torch.equal(plain, gated)


def test_bad_types_and_devices_are_rejected():
    images, probs, rois, seg_label = energy_inputs(1, 2, 8, 8)
    with pytest.raises(TypeError, match="probs must be a floating tensor"):
        rrm_ops.dense_energy_loss(images, (probs > 0.5).long(), rois, seg_label)
    with pytest.raises(TypeError, match="rois must be a torch.Tensor"):
        rrm_ops.dense_energy_loss(images, probs, rois.numpy(), seg_label)
    with pytest.raises(ValueError, match="rois is on meta but probs is on cpu"):
        rrm_ops.dense_energy_loss(images, probs, rois.to("meta"), seg_label)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p * 1.5, r"probs must be finite probabilities in \[0, 1\]"),
        (lambda p: p - 0.1, r"probs must be finite probabilities in \[0, 1\]"),
        (lambda p: torch.log(p), r"probs must be finite probabilities in \[0, 1\]"),
        (lambda p: p.masked_fill(p > 0.9, float("nan")), r"probs must be finite probabilities.*nan"),
    ],
)
def test_probs_outside_zero_one_are_rejected(change, message):
    images, probs, rois, seg_label = energy_inputs(1, 3, 12, 12)
    with pytest.raises(ValueError, match=message):
        rrm_ops.dense_energy_loss(images, change(probs), rois, seg_label)


def test_probs_not_summing_to_one_warn_and_are_used_as_given():
    images, probs, rois, seg_label = energy_inputs(1, 3, 12, 12)
    partial = probs[:, :2]
    with pytest.warns(UserWarning, match="probs do not sum to 1 over K"):
        loss = rrm_ops.dense_energy_loss(images, partial, rois, seg_label)
    assert torch.equal(loss, rrm_ops.dense_energy_loss(images, partial, rois, seg_label, check_values=False))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda image: image + 10, r"images must be finite RGB intensities in 0..255"),
        (lambda image: (image - 120) / 60, r"images must be finite RGB intensities in 0..255"),
        (lambda image: image.masked_fill(image > 200, float("inf")), r"images must be finite RGB.*inf"),
    ],
)
def test_images_outside_0_255_are_rejected(change, message):
    images, probs, rois, seg_label = energy_inputs(1, 3, 12, 12)
    images[0, 0, 0, :2] = torch.tensor([0.0, 250.0])
    with pytest.raises(ValueError, match=message):
        rrm_ops.dense_energy_loss(change(images), probs, rois, seg_label)


def test_images_in_zero_one_warn():
    images, probs, rois, seg_label = energy_inputs(1, 3, 12, 12)
    with pytest.warns(UserWarning, match="images are all within 0..1"):
        rrm_ops.dense_energy_loss(images / 255, probs, rois, seg_label)


def test_rois_outside_zero_one_are_rejected():
    images, probs, rois, seg_label = energy_inputs(1, 3, 12, 12)
    with pytest.raises(ValueError, match=r"rois must be in \[0, 1\]"):
        rrm_ops.dense_energy_loss(images, probs, rois * 2, seg_label)


def test_value_checks_can_be_switched_off():
    images, probs, rois, seg_label = energy_inputs(1, 3, 12, 12)
    loss = rrm_ops.dense_energy_loss(images + 300, probs * 2, rois, seg_label, check_values=False)
    assert torch.isfinite(loss)
