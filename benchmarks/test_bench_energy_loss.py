"""Dense energy loss forward + backward at RRM's training size, against the per-class loop.

N=4 images, K=21 classes, 321² input (160² after the 0.5 downscale: floor(321 · 0.5)), RRM's hyper-parameters.
The baseline is the structure of the public RRM / rloss code, run on our own lattice: one
lattice per image, one filtering per class, backward -2·A⊙roi/N. Both share the downscale,
the gate and the loss arithmetic, so the ratio measures the batched single-pass filtering.

Run: python -m pytest benchmarks/test_bench_energy_loss.py --benchmark-only
"""

import pytest
import torch
import torch.nn.functional as F

import rrm_ops
from conftest import photo_batch

BATCH, CLASSES, SIZE = 4, 21, 321
WEIGHT, SIGMA_RGB, SIGMA_XY, SCALE = 1e-7, 15.0, 100.0, 0.5


class _PerClassLoopEnergy(torch.autograd.Function):
    """RRM's DenseEnergyLossFunction on our lattice: per image a lattice, per class a filtering."""

    @staticmethod
    def forward(ctx, probs, images, rois, gate):
        n, k = probs.shape[:2]
        masked = probs * rois[:, None]
        energy_a = torch.empty_like(masked)
        for i in range(n):
            lattice = rrm_ops.Lattice(rrm_ops.bilateral_features(images[i : i + 1], SIGMA_XY * SCALE, SIGMA_RGB))
            for c in range(k):
                energy_a[i, c] = lattice.filter(masked[i : i + 1, c : c + 1])[0, 0]
        energy_a *= gate[:, None]
        ctx.save_for_backward(energy_a, rois)
        return (masked * energy_a).sum() * -(WEIGHT / n)

    @staticmethod
    def backward(ctx, grad_loss):
        energy_a, rois = ctx.saved_tensors
        return energy_a * rois[:, None] * (grad_loss * -2 * WEIGHT / energy_a.shape[0]), None, None, None


def per_class_loop_loss(images, probs, rois, seg_label):
    small_probs = F.interpolate(probs, scale_factor=SCALE, mode="bilinear", align_corners=False)
    small_images = F.interpolate(images, scale_factor=SCALE, mode="nearest")
    small_rois = F.interpolate(rois[:, None], scale_factor=SCALE, mode="nearest")[:, 0]
    small_seg = F.interpolate(seg_label, scale_factor=SCALE, mode="nearest")[:, 0]
    gate = rrm_ops.energy_gate(small_probs.detach(), small_rois, small_seg)
    return _PerClassLoopEnergy.apply(small_probs, small_images, small_rois, gate)


def rrm_ops_loss(gradient="rrm", check_values=None):
    return rrm_ops.DenseEnergyLoss(WEIGHT, SIGMA_RGB, SIGMA_XY, SCALE, gradient=gradient, check_values=check_values)


def training_batch():
    """Real photographs, smooth random softmax maps, padded-crop rois, seg_label with 255 regions."""
    generator = torch.Generator().manual_seed(0)
    images = photo_batch(SIZE, BATCH).permute(0, 3, 1, 2).float()
    coarse = torch.randn(BATCH, CLASSES, SIZE // 8, SIZE // 8, generator=generator) * 4
    probs = torch.softmax(F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False), dim=1)
    rois = torch.zeros(BATCH, SIZE, SIZE)
    rois[:, 20:, : SIZE - 40] = 1
    seg_label = torch.randint(0, CLASSES, (BATCH, 1, SIZE, SIZE), generator=generator).float()
    seg_label[:, :, SIZE // 3 : SIZE // 2] = 255
    return images, probs.requires_grad_(), rois, seg_label


def forward_backward(loss_fn, images, probs, rois, seg_label):
    loss = loss_fn(images, probs, rois, seg_label)
    return loss, torch.autograd.grad(loss, probs)[0]


def test_baseline_computes_the_same_loss():
    batch = training_batch()
    ours = forward_backward(rrm_ops_loss(), *batch)
    loop = forward_backward(per_class_loop_loss, *batch)
    torch.testing.assert_close(ours[0], loop[0], rtol=1e-5, atol=0)
    torch.testing.assert_close(ours[1], loop[1], rtol=1e-5, atol=1e-16)


IMPLEMENTATIONS = {
    "rrm_ops": rrm_ops_loss(),  # defaults: gradient="rrm", value checks on (CPU inputs)
    "rrm_ops_no_value_checks": rrm_ops_loss(check_values=False),
    "rrm_ops_exact": rrm_ops_loss(gradient="exact"),
    "per_image_per_class_loop": per_class_loop_loss,
}


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_dense_energy_loss_forward_backward(benchmark, implementation):
    benchmark.group = f"dense energy loss fwd+bwd, N={BATCH} K={CLASSES} {SIZE}² (160² after scaling)"
    loss_fn = IMPLEMENTATIONS[implementation]
    benchmark.extra_info["threads"] = torch.get_num_threads()
    benchmark.pedantic(forward_backward, args=(loss_fn, *training_batch()), rounds=5, warmup_rounds=1)
