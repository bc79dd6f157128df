"""rrm_ops.compat.bilateralfilter (rloss's SWIG module's API) against the numpy reference
lattice, its in-place contract, and rloss's loss computed through it."""

import numpy as np
import pytest
import torch

import rrm_ops
from conftest import photo
from rrm_ops.compat.bilateralfilter import bilateralfilter, bilateralfilter_batch
from reference.lattice_ref import LatticeRef, bilateral_features
from test_energy_loss import energy_inputs


def planar_images(n: int, h: int, w: int) -> np.ndarray:
    """float32 [n, 3, h, w] crops of different photographs, RGB 0..255."""
    names = ["astronaut", "chelsea", "coffee"]
    return np.stack([photo(names[i % 3], 30 + 11 * i, 100, h, w).transpose(2, 0, 1) for i in range(n)]).astype(np.float32)


def segmentations(n: int, k: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, k, h, w, generator=generator) * 3, dim=1).numpy()


def reference_filter(image_chw: np.ndarray, values_khw: np.ndarray, sigma_rgb: float, sigma_xy: float) -> np.ndarray:
    k, h, w = values_khw.shape
    lattice = LatticeRef(bilateral_features(image_chw.transpose(1, 2, 0), sigma_xy, sigma_rgb))
    return lattice.filter(values_khw.reshape(k, h * w).T).T.reshape(k, h, w)


def filtered_batch(images: np.ndarray, ins: np.ndarray, sigma_rgb: float, sigma_xy: float) -> np.ndarray:
    """bilateralfilter_batch of images [N, 3, H, W] and ins [N, K, H, W] -> [N, K, H, W], from an
    output filled with NaN (so values it fails to write show)."""
    n, k, h, w = ins.shape
    outs = np.full(ins.size, np.nan, np.float32)
    assert bilateralfilter_batch(images.ravel(), ins.ravel(), outs, n, k, h, w, sigma_rgb, sigma_xy) is None
    return outs.reshape(n, k, h, w)


@pytest.mark.parametrize("sigma_rgb, sigma_xy", [(15.0, 50.0), (5.0, 10.0)])
def test_batch_matches_the_numpy_reference_in_place(sigma_rgb, sigma_xy):
    images, ins = planar_images(3, 23, 31), segmentations(3, 4, 23, 31)
    result = filtered_batch(images, ins, sigma_rgb, sigma_xy)
    for i in range(3):
        np.testing.assert_allclose(result[i], reference_filter(images[i], ins[i], sigma_rgb, sigma_xy), rtol=1e-5,
                                   atol=1e-5)


def test_single_image_filters_every_channel_and_equals_the_batch():
    n, k, h, w = 2, 3, 17, 20
    images, ins = planar_images(n, h, w), segmentations(n, k, h, w, seed=1)
    batch = filtered_batch(images, ins, 15.0, 80.0)
    for i in range(n):
        out = np.zeros(k * h * w, np.float32)
        bilateralfilter(images[i].ravel(), ins[i].ravel(), out, h, w, 15.0, 80.0)
        np.testing.assert_array_equal(out, batch[i].ravel())
        np.testing.assert_allclose(out.reshape(k, h, w), reference_filter(images[i], ins[i], 15.0, 80.0), rtol=1e-5,
                                   atol=1e-5)


def test_one_pass_equals_the_per_class_loop_bitwise():
    images, ins = planar_images(2, 19, 24), segmentations(2, 5, 19, 24, seed=2)
    together = filtered_batch(images, ins, 15.0, 50.0)
    for c in range(5):
        one = filtered_batch(images, np.ascontiguousarray(ins[:, c : c + 1]), 15.0, 50.0)
        np.testing.assert_array_equal(one[:, 0], together[:, c])


def test_rloss_loss_through_the_compat_filter_equals_dense_energy_loss_called_like_rloss():
    # rloss's DenseCRFLoss: downscale, mask by the ROIs, filter with bilateralfilter_batch,
    # loss = -weight * <S, W S> / N. DenseEnergyLoss called with (images, probs, rois) is that loss.
    images, probs, rois, _ = energy_inputs(2, 3, 40, 36)
    weight, sigma_rgb, sigma_xy, scale = 2e-9, 15.0, 80.0, 0.5
    small_images = torch.nn.functional.interpolate(images, scale_factor=scale)
    small_probs = torch.nn.functional.interpolate(probs.float(), scale_factor=scale, mode="bilinear",
                                                  align_corners=False)
    small_rois = torch.nn.functional.interpolate(rois[:, None], scale_factor=scale)[:, 0]
    masked = (small_probs * small_rois[:, None]).numpy()
    n, k, h, w = masked.shape
    filtered = np.zeros(masked.size, np.float32)
    bilateralfilter_batch(small_images.numpy().ravel(), masked.ravel(), filtered, n, k, h, w, sigma_rgb,
                          sigma_xy * scale)
    rloss = -weight * np.dot(masked.ravel().astype(np.float64), filtered) / n
    module = rrm_ops.DenseEnergyLoss(weight=weight, sigma_rgb=sigma_rgb, sigma_xy=sigma_xy, scale_factor=scale)
    ours = module(images, probs.float(), rois)
    assert abs(ours.item() - rloss) <= 1e-5 * abs(rloss)


IMAGE, VALUES = np.zeros(3 * 4 * 5, np.float32), np.zeros(2 * 4 * 5, np.float32)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: bilateralfilter(IMAGE, VALUES, np.zeros(40, np.float64), 4, 5, 15, 80), TypeError,
         "out must have dtype float32"),
        (lambda: bilateralfilter(IMAGE, VALUES, list(VALUES), 4, 5, 15, 80), TypeError, "out must be a numpy array"),
        (lambda: bilateralfilter(IMAGE, VALUES, np.zeros(80, np.float32)[::2], 4, 5, 15, 80), ValueError,
         "out must be C-contiguous"),
        (lambda: bilateralfilter(IMAGE, VALUES, np.zeros(39, np.float32), 4, 5, 15, 80), ValueError,
         "out must be 1-D with 40 values"),
        (lambda: bilateralfilter(IMAGE[:-1], VALUES, np.zeros(40, np.float32), 4, 5, 15, 80), ValueError,
         "image must hold 3·H·W = 60 values"),
        (lambda: bilateralfilter(IMAGE, VALUES[:-1], np.zeros(39, np.float32), 4, 5, 15, 80), ValueError,
         "in must hold K·H·W values"),
        (lambda: bilateralfilter(IMAGE.reshape(3, 20), VALUES, np.zeros(40, np.float32), 4, 5, 15, 80), ValueError,
         "image must be a flat"),
        (lambda: bilateralfilter(IMAGE, np.full(40, np.nan, np.float32), np.zeros(40, np.float32), 4, 5, 15, 80),
         ValueError, "in contains NaN"),
        (lambda: bilateralfilter(IMAGE, VALUES, np.zeros(40, np.float32), 4, 5, 0, 80), ValueError,
         "sigma_rgb must be a positive finite number"),
        (lambda: bilateralfilter_batch(IMAGE, VALUES, np.zeros(40, np.float32), 1, 3, 4, 5, 15, 80), ValueError,
         "ins must hold N·K·H·W = 60 values"),
        (lambda: bilateralfilter_batch(IMAGE, VALUES, np.zeros(40, np.float32), 2, 1, 4, 5, 15, 80), ValueError,
         "images must hold N·3·H·W = 120 values"),
        (lambda: bilateralfilter_batch(IMAGE, VALUES, np.zeros(40, np.float32), 1, 2, 0, 5, 15, 80), ValueError,
         "H must be an integer >= 1"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_read_only_output_is_refused():
    out = np.zeros(40, np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be C-contiguous and writeable"):
        bilateralfilter(IMAGE, VALUES, out, 4, 5, 15, 80)
