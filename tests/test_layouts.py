"""Any memory layout of any input gives the bits of the contiguous input, for every registered op
and the public functions around them: channels_last, transposed, reversed (every dimension
permuted), sliced (a stride of 2), offset into a larger storage, and expanded (a batch of one
item broadcast), in float32 and float64 where the op takes both."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

import rrm_ops
from cuda_cases import photos, scores, smooth_maps
from op_arguments import DENSE_CRF, MINING

LAYOUTS = ("channels_last", "transposed", "reversed", "sliced", "offset", "expanded")


def in_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """x's values in `layout` (for "expanded", the values of x's first item broadcast over the
    batch: compare with in_layout(x, "expanded").contiguous())."""
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
    if layout == "transposed":
        return x.transpose(-1, -2).contiguous().transpose(-1, -2) if x.dim() >= 2 else x
    if layout == "reversed":
        order = list(range(x.dim()))[::-1]
        return x.permute(order).contiguous().permute(order)
    if layout == "sliced":
        wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1] + 1, dtype=x.dtype)
        wide[..., 1::2] = x
        return wide[..., 1::2]
    if layout == "offset":
        storage = torch.zeros(x.numel() + 7, dtype=x.dtype)
        storage[7:] = x.flatten()
        return storage[7:].view(x.shape)
    if layout == "expanded":
        return x[:1].expand(x.shape) if x.dim() >= 1 and x.shape[0] > 0 else x
    raise AssertionError(layout)


def assert_equal_outputs(actual: object, expected: object) -> None:
    if isinstance(expected, torch.Tensor):
        actual, expected = (actual,), (expected,)
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape and a.dtype == e.dtype, f"output {i}: {a.dtype} {a.shape} vs {e.dtype} {e.shape}"
        assert torch.equal(a, e), f"output {i}: {int((a != e).sum())} of {e.numel()} elements differ"


def _mining_inputs(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {"cams": (3 * smooth_maps(2, 3, 13, 17, seed=1)).to(dtype),
            "cls_labels": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]),
            "images": photos(2, 13, 17)}


def _prune_inputs(rows: bool) -> dict[str, torch.Tensor]:
    cams = smooth_maps(2, 3, 11, 12, seed=2).flatten(2)
    if not rows:
        q = scores(2, 4, 11, 12, seed=3).flatten(2)
        return {"cams": cams, "q_low": q, "q_high": scores(2, 4, 11, 12, seed=4).flatten(2)}
    q_labels = torch.tensor([[0, 1, 3, -1], [0, 2, -1, -1]], dtype=torch.int32)
    padding = (q_labels < 0).unsqueeze(2)
    q_low = scores(2, 4, 11, 12, seed=3).flatten(2).masked_fill(padding, 0.0)
    q_high = scores(2, 4, 11, 12, seed=4).flatten(2).masked_fill(padding, 0.0)
    return {"cams": cams, "q_low": q_low, "q_high": q_high, "q_labels": q_labels}


def _crf_inputs(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {"scores": scores(2, 3, 11, 13, seed=5).to(dtype), "image": photos(2, 11, 13),
            "label_mask": torch.tensor([[True, False, True], [True, True, True]])}


def _meanfield_inputs() -> dict[str, torch.Tensor]:
    lattices = rrm_ops.crf_lattices(photos(2, 11, 13))
    gaussian = lattices.gaussian.tensors
    bilateral = lattices.bilateral.tensors
    return {"unary": -torch.log(scores(2, 3, 11, 13, seed=6)).flatten(2),
            "label_mask": torch.tensor([[True, False, True], [True, True, True]]),
            "gaussian_offsets": gaussian.offsets, "gaussian_weights": gaussian.weights,
            "gaussian_neighbours": gaussian.neighbours, "gaussian_splat_ptr": gaussian.splat_ptr,
            "gaussian_splat_entries": gaussian.splat_entries, "gaussian_splat_weights": gaussian.splat_weights,
            "bilateral_offsets": bilateral.offsets, "bilateral_weights": bilateral.weights,
            "bilateral_neighbours": bilateral.neighbours, "bilateral_splat_ptr": bilateral.splat_ptr,
            "bilateral_splat_entries": bilateral.splat_entries, "bilateral_splat_weights": bilateral.splat_weights,
            "compat_matrices": torch.eye(3).expand(2, 3, 3) + 0.25}


def _lattice_inputs(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    features = rrm_ops.bilateral_features(photos(2, 9, 10), 8.0, 13.0).flatten(2).transpose(1, 2).contiguous()
    tensors = rrm_ops.Lattice(features).tensors
    return {"offsets": tensors.offsets, "weights": tensors.weights, "neighbours": tensors.neighbours,
            "splat_ptr": tensors.splat_ptr, "splat_entries": tensors.splat_entries,
            "splat_weights": tensors.splat_weights,
            "values": scores(2, 4, 9, 10, seed=7).flatten(2).transpose(1, 2).to(dtype).contiguous()}


def _energy_inputs(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    images = photos(2, 12, 14).permute(0, 3, 1, 2).float()
    seg_label = torch.randint(0, 3, (2, 1, 12, 14), generator=torch.Generator().manual_seed(8)).float()
    seg_label[:, :, :3] = 255
    rois = torch.ones(2, 12, 14)
    rois[:, :, -2:] = 0
    return {"images": images, "probs": scores(2, 3, 12, 14, seed=9).to(dtype), "rois": rois, "seg_label": seg_label}


def _energy_loss(images, probs, rois, seg_label):
    probs = probs.detach().requires_grad_()
    loss = rrm_ops.DenseEnergyLoss(gradient="exact")(images, probs, rois, seg_label)
    loss.backward()
    return loss.detach(), probs.grad


CASES: dict[str, tuple[Callable[[], dict[str, torch.Tensor]], Callable[..., object]]] = {
    "reliable_region_labels": (lambda: _mining_inputs(torch.float32),
                               lambda **a: torch.ops.rrm_ops.reliable_region_labels(**a, **MINING)),
    "reliable_region_labels float64": (lambda: _mining_inputs(torch.float64),
                                       lambda **a: torch.ops.rrm_ops.reliable_region_labels(**a, **MINING)),
    "reliable_region_labels wrapper": (lambda: _mining_inputs(torch.float32),
                                       lambda **a: rrm_ops.reliable_region_labels(**a, return_details=True)),
    "prune_reliable_labels": (lambda: _prune_inputs(rows=False),
                              lambda **a: torch.ops.rrm_ops.prune_reliable_labels(
                                  a["cams"], a["q_low"], a["q_high"], 32.0, 0.6, 0.1, 0.8, 0.5, 255, None)),
    "prune_reliable_labels q_labels": (lambda: _prune_inputs(rows=True),
                                       lambda **a: torch.ops.rrm_ops.prune_reliable_labels(
                                           a["cams"], a["q_low"], a["q_high"], 32.0, 0.6, 0.1, 0.8, 0.5, 255,
                                           a["q_labels"])),
    "dense_crf": (lambda: _crf_inputs(torch.float32),
                  lambda **a: torch.ops.rrm_ops.dense_crf(a["scores"], a["image"],
                                                          **{**DENSE_CRF, "n_iter": 3, "label_mask": a["label_mask"]})),
    "dense_crf float64": (lambda: _crf_inputs(torch.float64),
                          lambda **a: rrm_ops.dense_crf(a["scores"], a["image"], n_iter=3)),
    "dense_crf unary": (lambda: {"unary": -torch.log(scores(2, 3, 11, 13, seed=5)), "image": photos(2, 11, 13)},
                        lambda **a: rrm_ops.dense_crf(unary=a["unary"], image=a["image"], n_iter=3)),
    "dense_crf_meanfield": (_meanfield_inputs,
                            lambda **a: torch.ops.rrm_ops.dense_crf_meanfield(
                                a["unary"], a["label_mask"], [a[k] for k in list(a)[2:8]],
                                [a[k] for k in list(a)[8:14]], 3.0, 10.0, 3, a["compat_matrices"])),
    "lattice_build": (lambda: {"features": _lattice_inputs(torch.float32)["values"]},
                      lambda **a: torch.ops.rrm_ops.lattice_build(a["features"], 4)),
    "lattice_filter": (lambda: _lattice_inputs(torch.float32),
                       lambda **a: torch.ops.rrm_ops.lattice_filter(list(a.values())[:6], a["values"], False)),
    "lattice_filter float64": (lambda: _lattice_inputs(torch.float64),
                               lambda **a: torch.ops.rrm_ops.lattice_filter(list(a.values())[:6], a["values"], True)),
    "Lattice.filter": (lambda: {"features": rrm_ops.bilateral_features(photos(2, 9, 10), 8.0, 13.0),
                                "values": scores(2, 4, 9, 10, seed=7)},
                       lambda **a: rrm_ops.Lattice(a["features"]).filter(a["values"], normalize="symmetric")),
    "DenseEnergyLoss": (lambda: _energy_inputs(torch.float32), _energy_loss),
    "DenseEnergyLoss float64": (lambda: _energy_inputs(torch.float64), _energy_loss),
    "unary_from_scores": (lambda: {"scores": scores(2, 3, 5, 6, seed=10)},
                          lambda **a: rrm_ops.unary_from_scores(a["scores"])),
}


# A lattice's tensors number its vertices and entries across the batch, so one item's broadcast
# over the batch is no lattice; every other argument's items are independent.
LATTICE_TENSORS = {"offsets", "weights", "neighbours", "splat_ptr", "splat_entries", "splat_weights"}


def _has_layout(argument: str, tensor: torch.Tensor, layout: str) -> bool:
    """Whether `layout` gives `argument` strides or an offset of its own (a 1-D tensor has no
    transposed layout, a 3-D one no channels_last one) and keeps it a valid argument."""
    if layout == "expanded":
        return argument != "compat_matrices" and not any(argument.endswith(name) for name in LATTICE_TENSORS)
    changed = in_layout(tensor, layout)
    return not changed.is_contiguous() or changed.storage_offset() != 0


def _cases() -> list[tuple[str, str, str]]:
    return [(case, argument, layout) for case, (inputs, _) in CASES.items() for argument, tensor in inputs().items()
            for layout in LAYOUTS if _has_layout(argument, tensor, layout)]


@pytest.mark.parametrize("case, argument, layout", _cases())
def test_any_layout_gives_the_bits_of_the_contiguous_input(case, argument, layout):
    make_inputs, call = CASES[case]
    inputs = make_inputs()
    changed = in_layout(inputs[argument], layout)
    if layout == "expanded":
        inputs[argument] = changed.contiguous()
    expected = call(**inputs)
    assert_equal_outputs(call(**{**inputs, argument: changed}), expected)
