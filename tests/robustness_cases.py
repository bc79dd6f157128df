"""Bad inputs for every public function and registered op of rrm_ops, and a fuzz of random ones,
run in a child process so that a crash is a reported case, not a dead test run.

``python tests/robustness_cases.py table NAME...`` runs the named cases of CASES and prints, per
case, a JSON line before it starts and one with its outcome. ``python tests/robustness_cases.py
fuzz EXAMPLES`` runs a hypothesis search over random shapes, dtypes, values and layouts of every
op, printing each example before running it, then a JSON summary. tests/test_robustness.py runs
both and reads the lines.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

import rrm_ops
from cuda_cases import photos, scores, smooth_maps
from op_arguments import DENSE_CRF, MINING

OPS = torch.ops.rrm_ops
Move = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Case:
    """call(move) builds the inputs, passes every tensor through move (identity, or to the meta
    device for the fake kernels), and calls; kind and match (a regex naming the argument) are
    the error it must raise; data_free: the check needs no data, so the fake kernel (for a
    registered op) gives the same error."""

    call: Callable[[Move], Any]
    kind: type[Exception]
    match: str
    data_free: bool = False


def _with(t: torch.Tensor, index: tuple, value: float) -> torch.Tensor:
    t = t.clone()
    t[index] = value
    return t


def _cams() -> torch.Tensor:
    return 2 * smooth_maps(1, 2, 6, 7, seed=1)


CLS = torch.tensor([[1.0, 1.0]])


def _images() -> torch.Tensor:
    return photos(1, 6, 7)


def _mining(m: Move, cams=None, cls=None, images=None, **kwargs):
    return OPS.reliable_region_labels(m(_cams() if cams is None else cams), m(CLS if cls is None else cls),
                                      m(_images() if images is None else images), **{**MINING, **kwargs})


def _prune_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cams = smooth_maps(1, 3, 5, 6, seed=2).flatten(2)
    return cams, scores(1, 4, 5, 6, seed=3).flatten(2), scores(1, 4, 5, 6, seed=4).flatten(2)


PRUNE = dict(cam_alpha=32.0, fg_quantile=0.6, cam_floor=0.1, bg_sure=0.8, crf_sure=0.8, ignore_index=255)


def _prune(m: Move, cams=None, q_low=None, q_high=None, q_labels=None, **change):
    base = _prune_inputs()
    arguments = [m(base[i] if given is None else given) for i, given in enumerate((cams, q_low, q_high))]
    return OPS.prune_reliable_labels(*arguments, **{**PRUNE, **change},
                                     q_labels=None if q_labels is None else m(q_labels))


def _crf_scores() -> torch.Tensor:
    return scores(1, 3, 6, 7, seed=5)


def _crf(m: Move, scores_=None, image=None, **kwargs):
    return OPS.dense_crf(m(_crf_scores() if scores_ is None else scores_), m(_images() if image is None else image),
                         **{**DENSE_CRF, **kwargs})


def _meanfield(m: Move, unary=None, label_mask=None, n_iter=3, compat_matrices=None, batch=1,
               gaussian_compat=3.0, gaussian_tensors=6):
    lattices = rrm_ops.crf_lattices(photos(batch, 6, 7))
    unary = -torch.log(scores(1, 3, 6, 7, seed=6)).flatten(2) if unary is None else unary
    return OPS.dense_crf_meanfield(m(unary), None if label_mask is None else m(label_mask),
                                   [*map(m, lattices.gaussian.tensors.as_tuple())][:gaussian_tensors],
                                   [*map(m, lattices.bilateral.tensors.as_tuple())], gaussian_compat, 10.0, n_iter,
                                   None if compat_matrices is None else m(compat_matrices))


def _lattice_tensors() -> tuple[torch.Tensor, ...]:
    return rrm_ops.Lattice(torch.rand(1, 12, 2, generator=torch.Generator().manual_seed(0))).tensors.as_tuple()


def _energy(images=None, probs=None, rois=None, seg_label=None, **settings):
    base_probs = scores(1, 3, 8, 8, seed=7)
    base_images = photos(1, 8, 8).permute(0, 3, 1, 2).float()
    return rrm_ops.dense_energy_loss(base_images if images is None else images,
                                     base_probs if probs is None else probs,
                                     torch.ones(1, 8, 8) if rois is None else rois,
                                     torch.zeros(1, 1, 8, 8) if seg_label is None else seg_label, **settings)


NAN, INF = float("nan"), float("inf")


def _cases() -> dict[str, Case]:
    cases = {
        # reliable_region_labels, the registered op
        "mining op: NaN cams": Case(lambda m: _mining(m, cams=_with(_cams(), (0, 1, 2, 3), NAN)), ValueError,
                                    "cams must be finite and >= 0"),
        "mining op: inf cams": Case(lambda m: _mining(m, cams=_with(_cams(), (0, 0, 0, 0), INF)), ValueError,
                                    "cams must be finite and >= 0"),
        "mining op: negative cams": Case(lambda m: _mining(m, cams=_with(_cams(), (0, 0, 5, 6), -1e-3)),
                                         ValueError, "cams must be finite and >= 0"),
        "mining op: float64 cams beyond float32": Case(
            lambda m: _mining(m, cams=_with(_cams().double(), (0, 0, 1, 1), 1e300)), ValueError,
            "cams must be finite and >= 0"),
        "mining op: cls_labels 7": Case(lambda m: _mining(m, cls=torch.tensor([[7, 0]])), ValueError,
                                        "cls_labels must hold only 0 and 1"),
        "mining op: cls_labels 0.5": Case(lambda m: _mining(m, cls=torch.tensor([[0.5, 1.0]])), ValueError,
                                          "cls_labels must hold only 0 and 1"),
        "mining op: cls_labels NaN": Case(lambda m: _mining(m, cls=torch.tensor([[NAN, 1.0]])), ValueError,
                                          "cls_labels must hold only 0 and 1"),
        "mining op: cls_labels -1": Case(lambda m: _mining(m, cls=torch.tensor([[-1, 1]])), ValueError,
                                         "cls_labels must hold only 0 and 1"),
        "mining op: complex cls_labels": Case(lambda m: _mining(m, cls=torch.ones(1, 2, dtype=torch.complex64)),
                                              TypeError, "cls_labels must be a real or bool tensor", True),
        "mining op: cls_labels [1, 3]": Case(lambda m: _mining(m, cls=torch.ones(1, 3)), ValueError,
                                             r"cls_labels must be \[B, C\] = \[1, 2\]", True),
        "mining op: ignore_index 1": Case(lambda m: _mining(m, ignore_index=1), ValueError,
                                          "ignore_index must not be a label", True),
        "mining op: ignore_index 0": Case(lambda m: _mining(m, ignore_index=0), ValueError,
                                          "ignore_index must not be a label", True),
        "mining op: ignore_index C": Case(lambda m: _mining(m, ignore_index=2), ValueError,
                                          r"ignore_index must not be a label \(0\.\.2", True),
        "mining op: int64 cams": Case(lambda m: _mining(m, cams=torch.ones(1, 2, 6, 7, dtype=torch.int64)),
                                      TypeError, "cams must be float32 or float64, got Long", True),
        "mining op: float16 cams": Case(lambda m: _mining(m, cams=_cams().half()), TypeError,
                                        "cams must be float32 or float64, got Half", True),
        "mining op: 3-D cams": Case(lambda m: _mining(m, cams=_cams()[0]), ValueError,
                                    r"cams must be 4-D \[B, C, H, W\]", True),
        "mining op: no class": Case(lambda m: _mining(m, cams=_cams()[:, :0], cls=torch.ones(1, 0)), ValueError,
                                    "cams must have at least one class channel", True),
        "mining op: float images": Case(lambda m: _mining(m, images=_images().float()), TypeError,
                                        "images must have dtype uint8", True),
        "mining op: images 7 x 6": Case(lambda m: _mining(m, images=photos(1, 7, 6)), ValueError,
                                        r"images must be \[B, H, W, 3\] or \[B, 3, H, W\] with the H x W = 6 x 7",
                                        True),
        "mining op: images of 2": Case(lambda m: _mining(m, images=photos(2, 6, 7)), ValueError,
                                       "images has batch size 2 but cams has 1", True),
        "mining op: alpha_low 0": Case(lambda m: _mining(m, alpha_low=0.0), ValueError,
                                       "alpha_low must be a positive finite number", True),
        "mining op: alpha_high NaN": Case(lambda m: _mining(m, alpha_high=NAN), ValueError,
                                          "alpha_high must be a positive finite number", True),
        "mining op: cam_alpha inf": Case(lambda m: _mining(m, cam_alpha=INF), ValueError,
                                         "cam_alpha must be a positive number", True),
        "mining op: fg_quantile 1": Case(lambda m: _mining(m, fg_quantile=1.0), ValueError,
                                         r"fg_quantile must be in \[0, 1\)", True),
        "mining op: cam_floor -0.1": Case(lambda m: _mining(m, cam_floor=-0.1), ValueError,
                                          r"cam_floor must be in \[0, 1\)", True),
        "mining op: bg_sure 2": Case(lambda m: _mining(m, bg_sure=2.0), ValueError, r"bg_sure must be in \[0, 1\]",
                                     True),
        "mining op: crf_sure NaN": Case(lambda m: _mining(m, crf_sure=NAN), ValueError,
                                        r"crf_sure must be in \[0, 1\]", True),
        "mining op: gaussian_sxy 0": Case(lambda m: _mining(m, gaussian_sxy=0.0), ValueError,
                                          "gaussian_sxy must be a positive finite number", True),
        "mining op: bilateral_compat inf": Case(lambda m: _mining(m, bilateral_compat=INF), ValueError,
                                                "bilateral_compat must be a finite number", True),
        "mining op: cls_labels on another device": Case(
            lambda m: OPS.reliable_region_labels(_cams(), CLS.to("meta"), _images(), **MINING), ValueError,
            "cls_labels must be on the CPU or on cpu with cams, got meta"),
        "mining op: images on another device": Case(
            lambda m: OPS.reliable_region_labels(_cams(), CLS, _images().to("meta"), **MINING), ValueError,
            "images is on meta but cams is on cpu"),
        # reliable_region_labels, the wrapper
        "mining: cams a list": Case(lambda m: rrm_ops.reliable_region_labels([[1.0]], CLS, _images()), TypeError,
                                    "cams must be a torch.Tensor"),
        "mining: alpha_low a string": Case(
            lambda m: rrm_ops.reliable_region_labels(_cams(), CLS, _images(), alpha_low="4"), TypeError,
            "alpha_low must be a real number"),
        "mining: ignore_index 2.5": Case(
            lambda m: rrm_ops.reliable_region_labels(_cams(), CLS, _images(), ignore_index=2.5), TypeError,
            "ignore_index must be an integer"),
        "mining: ignore_index 1": Case(lambda m: rrm_ops.reliable_region_labels(_cams(), CLS, _images(),
                                                                                ignore_index=1),
                                       ValueError, "ignore_index must not be a label"),
        "mining: cls_labels 7": Case(lambda m: rrm_ops.reliable_region_labels(_cams(), torch.tensor([[7, 1]]),
                                                                              _images()),
                                     ValueError, "cls_labels must hold only 0 and 1"),
        "mining: NaN cams": Case(lambda m: rrm_ops.reliable_region_labels(_with(_cams(), (0, 0, 0, 0), NAN), CLS,
                                                                          _images()),
                                 ValueError, "cams must be finite and >= 0"),
        "mining: crf a dict": Case(
            lambda m: rrm_ops.reliable_region_labels(_cams(), CLS, _images(), crf=rrm_ops.TRAINING_CRF.as_kwargs()),
            TypeError, "crf must be a CrfParams"),
        "mining: crf n_iter 2.5": Case(
            lambda m: rrm_ops.reliable_region_labels(_cams(), CLS, _images(),
                                                     crf=dataclasses.replace(rrm_ops.TRAINING_CRF, n_iter=2.5)),
            TypeError, "n_iter must be an integer"),
        # prune_reliable_labels
        "prune op: NaN cams": Case(lambda m: _prune(m, cams=_with(_prune_inputs()[0], (0, 1, 3), NAN)),
                                   ValueError, "cams must be finite and >= 0"),
        "prune op: negative cams": Case(lambda m: _prune(m, cams=_with(_prune_inputs()[0], (0, 1, 3), -1.0)),
                                        ValueError, "cams must be finite and >= 0"),
        "prune op: inf cams": Case(lambda m: _prune(m, cams=_with(_prune_inputs()[0], (0, 0, 0), INF)),
                                   ValueError, "cams must be finite and >= 0"),
        "prune op: ignore_index 0": Case(lambda m: _prune(m, ignore_index=0), ValueError,
                                         "ignore_index must not be a label", True),
        "prune op: ignore_index C": Case(lambda m: _prune(m, ignore_index=3), ValueError,
                                         r"ignore_index must not be a label \(0\.\.3", True),
        "prune op: float64 cams": Case(lambda m: _prune(m, cams=_prune_inputs()[0].double()), TypeError,
                                       "cams must have dtype Float, got Double", True),
        "prune op: int q_low": Case(lambda m: _prune(m, q_low=_prune_inputs()[1].int()), TypeError,
                                    "q_low must have dtype Float, got Int", True),
        "prune op: float q_labels": Case(lambda m: _prune(m, q_labels=torch.zeros(1, 4)), TypeError,
                                         "q_labels must have dtype Int", True),
        "prune op: 2-D cams": Case(lambda m: _prune(m, cams=_prune_inputs()[0][0]), ValueError,
                                   r"cams must be 3-D \[B, C, P\]", True),
        "prune op: q_high of 3 rows": Case(lambda m: _prune(m, q_high=_prune_inputs()[2][:, :3]), ValueError,
                                           r"q_high must be \[B, C\+1, P\] = \[1, 4, 30\]", True),
        "prune op: q_labels of 2 images": Case(lambda m: _prune(m, q_labels=torch.zeros(2, 4, dtype=torch.int32)),
                                               ValueError, "q_labels must be \\[B, R\\] with the B = 1", True),
        "prune op: fg_quantile 1.5": Case(lambda m: _prune(m, fg_quantile=1.5), ValueError,
                                          r"fg_quantile must be in \[0, 1\)", True),
        "prune op: q_low on another device": Case(
            lambda m: OPS.prune_reliable_labels(_prune_inputs()[0], _prune_inputs()[1].to("meta"),
                                                _prune_inputs()[2], **PRUNE, q_labels=None),
            ValueError, "q_low is on meta but cams is on cpu"),
        # dense_crf
        "dense_crf op: NaN scores": Case(lambda m: _crf(m, scores_=_with(_crf_scores(), (0, 0, 1, 1), NAN)),
                                         ValueError, "scores contains NaN or infinite values"),
        "dense_crf op: negative scores": Case(lambda m: _crf(m, scores_=_crf_scores() - 1), ValueError,
                                              "scores must be non-negative"),
        "dense_crf op: inf unary": Case(
            lambda m: OPS.dense_crf(None, m(_images()),
                                    **{**DENSE_CRF, "unary": m(_with(_crf_scores(), (0, 1, 1, 1), INF))}),
                                        ValueError, "unary contains NaN or infinite values"),
        "dense_crf op: int scores": Case(lambda m: _crf(m, scores_=_crf_scores().int()), TypeError,
                                         "scores must be float32 or float64, got Int", True),
        "dense_crf op: 3-D scores": Case(lambda m: _crf(m, scores_=_crf_scores()[0]), ValueError,
                                         r"scores must be 4-D \[B, L, H, W\]", True),
        "dense_crf op: no label": Case(lambda m: _crf(m, scores_=_crf_scores()[:, :0]), ValueError,
                                       r"scores must have at least one label \(L >= 1\)", True),
        "dense_crf op: float image": Case(lambda m: _crf(m, image=_images().float()), TypeError,
                                          "image must have dtype uint8", True),
        "dense_crf op: 9 x 9 image of 6 x 7 scores": Case(lambda m: _crf(m, image=photos(1, 9, 9)), ValueError,
                                                          "image must be .* with the H x W = 6 x 7 of scores", True),
        "dense_crf op: image of 2": Case(lambda m: _crf(m, image=photos(2, 6, 7)), ValueError,
                                         "image has batch size 2 but scores has 1", True),
        "dense_crf op: both scores and unary": Case(lambda m: _crf(m, unary=m(_crf_scores())), ValueError,
                                                    "exactly one of scores and unary, got both", True),
        "dense_crf op: neither scores nor unary": Case(lambda m: OPS.dense_crf(None, m(_images()), **DENSE_CRF),
                                                       ValueError,
                                                       "exactly one of scores and unary, got neither", True),
        "dense_crf op: float label_mask": Case(lambda m: _crf(m, label_mask=m(torch.ones(1, 3))), TypeError,
                                               "label_mask must have dtype bool", True),
        "dense_crf op: label_mask [1, 4]": Case(
            lambda m: _crf(m, label_mask=m(torch.ones(1, 4, dtype=torch.bool))), ValueError,
            r"label_mask must be \[B, L\] = \[1, 3\]", True),
        "dense_crf op: gaussian_sxy 0": Case(lambda m: _crf(m, gaussian_sxy=0.0), ValueError,
                                             "gaussian_sxy must be a positive finite number", True),
        "dense_crf op: bilateral_sxy inf": Case(lambda m: _crf(m, bilateral_sxy=INF), ValueError,
                                                "bilateral_sxy must be a positive finite number", True),
        "dense_crf op: bilateral_srgb NaN": Case(lambda m: _crf(m, bilateral_srgb=NAN), ValueError,
                                                 "bilateral_srgb must be a positive finite number", True),
        "dense_crf op: gaussian_compat inf": Case(lambda m: _crf(m, gaussian_compat=INF), ValueError,
                                                  "gaussian_compat must be a finite number", True),
        "dense_crf op: bilateral_compat NaN": Case(lambda m: _crf(m, bilateral_compat=NAN), ValueError,
                                                   "bilateral_compat must be a finite number", True),
        "dense_crf: scores a list": Case(lambda m: rrm_ops.dense_crf([[0.5]], _images()), TypeError,
                                         "scores must be a torch.Tensor"),
        "dense_crf: n_iter 2.5": Case(lambda m: rrm_ops.dense_crf(_crf_scores(), _images(), n_iter=2.5), TypeError,
                                      "n_iter must be an integer"),
        "dense_crf: gaussian_sxy None": Case(lambda m: rrm_ops.dense_crf(_crf_scores(), _images(), gaussian_sxy=None),
                                             TypeError, "gaussian_sxy must be a real number"),
        # dense_crf_meanfield
        "meanfield op: float64 unary": Case(lambda m: _meanfield(m, unary=-torch.log(scores(1, 3, 6, 7, 6)).flatten(2)
                                                                 .double()),
                                            TypeError, "unary must have dtype Float, got Double", True),
        "meanfield op: 4-D unary": Case(lambda m: _meanfield(m, unary=torch.zeros(1, 3, 6, 7)), ValueError,
                                        r"unary must be 3-D \[B, L, P\]", True),
        "meanfield op: no label": Case(lambda m: _meanfield(m, unary=torch.zeros(1, 0, 42)), ValueError,
                                       r"unary must have at least one label", True),
        "meanfield op: int label_mask": Case(lambda m: _meanfield(m, label_mask=torch.ones(1, 3, dtype=torch.int32)),
                                             TypeError, "label_mask must have dtype bool", True),
        "meanfield op: label_mask [2, 3]": Case(
            lambda m: _meanfield(m, label_mask=torch.ones(2, 3, dtype=torch.bool)), ValueError,
            r"label_mask must be \[B, L\] = \[1, 3\]", True),
        "meanfield op: lattices of 2 images": Case(lambda m: _meanfield(m, batch=2), ValueError,
                                                   "gaussian lattice must be built over the B = 1 images", True),
        "meanfield op: float64 compat_matrices": Case(
            lambda m: _meanfield(m, compat_matrices=torch.zeros(2, 3, 3, dtype=torch.float64)), TypeError,
            "compat_matrices must have dtype Float", True),
        "meanfield op: compat_matrices [2, 3, 4]": Case(lambda m: _meanfield(m, compat_matrices=torch.zeros(2, 3, 4)),
                                                        ValueError, r"compat_matrices must be \[2, L, L\]", True),
        "meanfield op: NaN compat_matrices": Case(
            lambda m: _meanfield(m, compat_matrices=torch.full((2, 3, 3), NAN)), ValueError,
            "compat_matrices contains NaN or infinite values"),
        "meanfield op: NaN unary": Case(
            lambda m: _meanfield(m, unary=_with(torch.zeros(1, 3, 42), (0, 2, 5), NAN)), ValueError,
            "unary contains NaN or infinite values"),
        "meanfield op: 5 gaussian lattice tensors": Case(lambda m: _meanfield(m, gaussian_tensors=5), ValueError,
                                                         "gaussian must hold the 6 tensors of a lattice", True),
        "meanfield op: gaussian_compat NaN": Case(lambda m: _meanfield(m, gaussian_compat=NAN), ValueError,
                                                  "gaussian_compat must be a finite number", True),
        "mean_field: n_iter -1": Case(lambda m: rrm_ops.mean_field(torch.zeros(1, 3, 6, 7),
                                                                   rrm_ops.crf_lattices(photos(1, 6, 7)), n_iter=-1),
                                      ValueError, r"n_iter must be in 0\.\.10000, got -1"),
        "mean_field: unary 7 x 6": Case(lambda m: rrm_ops.mean_field(torch.zeros(1, 3, 7, 6),
                                                                     rrm_ops.crf_lattices(photos(1, 6, 7))),
                                        ValueError, "unary must be .* H, W = 6, 7 of the lattices"),
        # lattices
        "lattice_build op: int features": Case(lambda m: OPS.lattice_build(m(torch.zeros(1, 4, 2, dtype=torch.int32)),
                                                                           1),
                                               TypeError, "features must have dtype Float", True),
        "lattice_build op: 2-D features": Case(lambda m: OPS.lattice_build(m(torch.zeros(4, 2)), 1), ValueError,
                                               r"features must be 3-D \[B, P, d\]", True),
        "lattice_build op: d = 17": Case(lambda m: OPS.lattice_build(m(torch.zeros(1, 4, 17)), 1), RuntimeError,
                                         "features must have a feature dimension d in 1..16", True),
        "lattice_build op: point_block 0": Case(lambda m: OPS.lattice_build(m(torch.zeros(1, 4, 2)), 0),
                                                RuntimeError, "point_block must be >= 1", True),
        "lattice_build op: NaN features": Case(lambda m: OPS.lattice_build(m(_with(torch.zeros(1, 4, 2), (0, 1, 1),
                                                                                   NAN)), 1),
                                               ValueError, "features contains NaN or infinite values"),
        "lattice_filter op: int values": Case(
            lambda m: OPS.lattice_filter([*map(m, _lattice_tensors())], m(torch.ones(1, 12, 2, dtype=torch.int64)),
                                         False),
            TypeError, "values must be float32 or float64, got Long", True),
        "lattice_filter op: values of 11 points": Case(
            lambda m: OPS.lattice_filter([*map(m, _lattice_tensors())], m(torch.ones(1, 11, 2)), False),
            RuntimeError, "values must be \\[B, P, C\\] with B and P of the lattice", True),
        "lattice_filter op: 2-D values": Case(
            lambda m: OPS.lattice_filter([*map(m, _lattice_tensors())], m(torch.ones(12, 2)), False),
            ValueError, r"values must be 3-D \[B, P, C\]", True),
        "lattice_filter op: 5 lattice tensors": Case(
            lambda m: OPS.lattice_filter([*map(m, _lattice_tensors())][:5], m(torch.ones(1, 12, 2)), False),
            ValueError, "lattice must hold the 6 tensors of a lattice", True),
        "Lattice: 24 x 32 features, 32 x 24 values": Case(
            lambda m: rrm_ops.Lattice(torch.rand(1, 2, 24, 32)).filter(torch.rand(1, 3, 32, 24)), ValueError,
            "values is 32x24 but the lattice was built on 24x32 features"),
        "Lattice: features a list": Case(lambda m: rrm_ops.Lattice([[0.0]]), TypeError,
                                         "features must be a torch.Tensor"),
        "crf_lattices: float image": Case(lambda m: rrm_ops.crf_lattices(_images().float()), TypeError,
                                          "image must have dtype uint8"),
        "bilateral_features: sigma_rgb 0": Case(lambda m: rrm_ops.bilateral_features(_images(), 8.0, 0.0),
                                                ValueError, "sigma_rgb must be a positive finite number"),
        "gaussian_features: sigma_xy -1": Case(lambda m: rrm_ops.gaussian_features(1, 4, 4, -1.0), ValueError,
                                               "sigma_xy must be a positive finite number"),
        "unary_from_scores: NaN scores": Case(lambda m: rrm_ops.unary_from_scores(torch.full((1, 2, 2, 2), NAN)),
                                              ValueError, "scores contains NaN or infinite values"),
        # the dense energy loss
        "energy loss: NaN probs": Case(lambda m: _energy(probs=_with(scores(1, 3, 8, 8, 7), (0, 0, 0, 0), NAN)),
                                       ValueError, "probs must be finite probabilities"),
        "energy loss: rois 2": Case(lambda m: _energy(rois=torch.full((1, 8, 8), 2.0)), ValueError,
                                    r"rois must be in \[0, 1\]"),
        "energy loss: images 300": Case(lambda m: _energy(images=torch.full((1, 3, 8, 8), 300.0)), ValueError,
                                        "images must be finite RGB intensities in 0..255"),
        "energy loss: int probs": Case(lambda m: _energy(probs=torch.ones(1, 3, 8, 8, dtype=torch.int64)),
                                       TypeError, "probs must be a floating tensor"),
        "energy loss: rois [1, 8, 9]": Case(lambda m: _energy(rois=torch.ones(1, 8, 9)), ValueError,
                                            "rois must have shape"),
        "energy loss: sigma_rgb 0": Case(lambda m: _energy(sigma_rgb=0.0), ValueError,
                                         "sigma_rgb must be a positive finite number"),
        "energy loss: gradient 'x'": Case(lambda m: _energy(gradient="x"), ValueError, "gradient must be"),
        "energy loss: scale_factor 2": Case(lambda m: _energy(scale_factor=2.0), ValueError,
                                            r"scale_factor must be in \(0, 1\]"),
    }
    for n_iter in (-1, 10_001, 2**31, 2**32, 2**62):
        cases[f"dense_crf op: n_iter {n_iter}"] = Case(lambda m, n=n_iter: _crf(m, n_iter=n), ValueError,
                                                       rf"n_iter must be in 0\.\.10000, got {n_iter}", True)
        cases[f"meanfield op: n_iter {n_iter}"] = Case(lambda m, n=n_iter: _meanfield(m, n_iter=n), ValueError,
                                                       rf"n_iter must be in 0\.\.10000, got {n_iter}", True)
        cases[f"mining op: n_iter {n_iter}"] = Case(lambda m, n=n_iter: _mining(m, n_iter=n), ValueError,
                                                    rf"n_iter must be in 0\.\.10000, got {n_iter}", True)
        cases[f"mining: crf n_iter {n_iter}"] = Case(
            lambda m, n=n_iter: rrm_ops.reliable_region_labels(
                _cams(), CLS, _images(), crf=dataclasses.replace(rrm_ops.TRAINING_CRF, n_iter=n)),
            ValueError, rf"n_iter must be in 0\.\.10000, got {n_iter}")
        cases[f"dense_crf: n_iter {n_iter}"] = Case(
            lambda m, n=n_iter: rrm_ops.dense_crf(_crf_scores(), _images(), n_iter=n), ValueError,
            rf"n_iter must be in 0\.\.10000, got {n_iter}")
    return cases


CASES = _cases()


def identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def run_table(names: list[str]) -> None:
    for name in names:
        _emit({"start": name})
        try:
            CASES[name].call(identity)
        except Exception as error:  # the outcome is the subject of the test
            _emit({"name": name, "raised": type(error).__name__, "message": str(error).splitlines()[0]})
        else:
            _emit({"name": name, "raised": None, "message": ""})


# ---------------------------------------------------------------------------------------------
# The fuzz

# Weighted toward the valid dtype and values, so that most examples reach the kernels.
DTYPES = (torch.float32,) * 4 + (torch.float64, torch.float16, torch.int64, torch.uint8, torch.bool)
VALUE_KINDS = ("unit",) * 4 + ("zeros", "nan", "inf", "negative", "huge")
LAYOUT_KINDS = ("contiguous", "transposed", "sliced", "reversed", "expanded")
FUZZED = ("reliable_region_labels", "prune_reliable_labels", "dense_crf", "dense_crf unary", "dense_crf_meanfield",
          "lattice_build", "lattice_filter", "Lattice.filter", "dense_energy_loss")
# The lattice builds coordinates from features scaled by their sigmas; the bounds of finite
# features a lattice takes are the lattice's own checks, so the fuzz keeps features to |f| <= 1e3.
FEATURE_BOUND = 1e3


def _values(rng: np.random.Generator, shape: tuple[int, ...], dtype: torch.dtype, kind: str) -> torch.Tensor:
    base = torch.from_numpy(rng.random(shape)).float()
    if kind == "zeros":
        base = torch.zeros(shape)
    elif kind == "negative":
        base = base - 0.5
    elif kind == "huge":
        base = base * 1e30
    if base.numel() and kind in ("nan", "inf"):
        base.view(-1)[int(rng.integers(base.numel()))] = NAN if kind == "nan" else INF
    if dtype == torch.bool:
        return base > 0.5
    if not dtype.is_floating_point:
        return base.clamp(-1e6, 1e6).round().to(dtype) if dtype != torch.uint8 else (base.clamp(0, 1) * 255).to(dtype)
    return base.to(dtype)


def _layout(t: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "transposed" and t.dim() >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if kind == "reversed":
        order = list(range(t.dim()))[::-1]
        return t.permute(order).contiguous().permute(order)
    if kind == "sliced" and t.dim() >= 1:
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    if kind == "expanded" and t.dim() >= 1 and t.shape[0] > 0:
        return t[:1].expand(t.shape)
    return t


def fuzz_call(spec: dict) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The call a spec describes, with its tensors in the spec's layouts, and the same call with
    contiguous copies of them."""
    rng = np.random.default_rng(spec["seed"])
    b, c, h, w = spec["batch"], spec["classes"], spec["height"], spec["width"]
    shape_off = spec["shape_off"]

    def size(n: int) -> int:
        return n + 1 if shape_off and rng.random() < 0.5 else n

    def t(shape, dtype=None, kind=None, layout=True):
        tensor = _values(rng, tuple(shape), dtype or spec["dtype"], kind or spec["values"])
        return tensor, _layout(tensor, spec["layout"]) if layout else tensor

    op = spec["op"]
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def use(pair):
        pairs.append(pair)
        return len(pairs) - 1

    if op == "reliable_region_labels":
        ids = [use(t((b, c, h, w))), use(t((size(b), c), torch.float32, "zeros" if rng.random() < 0.5 else "unit")),
               use(t((b, size(h), w, 3), torch.uint8, "unit"))]
        extra = {"ignore_index": int(rng.choice([255, -1, 0, c, c + 1]))}

        def run(ts):
            return OPS.reliable_region_labels(*(ts[i] for i in ids), **{**MINING, **extra})
    elif op == "prune_reliable_labels":
        ids = [use(t((b, c, h * w))), use(t((b, size(c + 1), h * w), torch.float32, "unit")),
               use(t((b, c + 1, h * w), torch.float32, "unit"))]
        ignore = int(rng.choice([255, -1, 0, c]))

        def run(ts):
            return OPS.prune_reliable_labels(*(ts[i] for i in ids), 32.0, 0.6, 0.1, 0.8, 0.8, ignore, None)
    elif op in ("dense_crf", "dense_crf unary"):
        ids = [use(t((b, c, h, w))), use(t((size(b), h, w, 3), torch.uint8, "unit"))]
        n_iter = int(rng.choice([0, 1, 3, -1, 10_001]))

        def run(ts):
            if op == "dense_crf":
                return OPS.dense_crf(ts[ids[0]], ts[ids[1]], **{**DENSE_CRF, "n_iter": n_iter})
            return OPS.dense_crf(None, ts[ids[1]], **{**DENSE_CRF, "unary": ts[ids[0]], "n_iter": n_iter})
    elif op == "dense_crf_meanfield":
        image = _values(rng, (size(b), h, w, 3), torch.uint8, "unit")
        ids = [use(t((b, c, h * w))), use(t((b, size(c)), torch.bool, "unit"))]
        n_iter = int(rng.choice([0, 2, -1]))

        def run(ts):
            lattices = rrm_ops.crf_lattices(image)
            return OPS.dense_crf_meanfield(ts[ids[0]], ts[ids[1]], lattices.gaussian.tensors.as_tuple(),
                                           lattices.bilateral.tensors.as_tuple(), 3.0, 10.0, n_iter, None)
    elif op == "lattice_build":
        ids = [use(t((b, h * w, max(c, 1)), kind=spec["values"] if spec["values"] != "huge" else "unit"))]
        block = int(rng.choice([1, 4, 0]))

        def run(ts):
            return OPS.lattice_build(ts[ids[0]].clamp(-FEATURE_BOUND, FEATURE_BOUND)
                                     if ts[ids[0]].is_floating_point() else ts[ids[0]], block)
    elif op == "lattice_filter":
        features = torch.from_numpy(rng.random((b, h * w, 3))).float() * 4
        tensors = OPS.lattice_build(features, 1)
        ids = [use(t((b, size(h * w), c)))]
        reverse = bool(rng.random() < 0.5)

        def run(ts):
            return OPS.lattice_filter(tensors, ts[ids[0]], reverse)
    elif op == "Lattice.filter":
        ids = [use(t((b, 2, h, w), torch.float32, "unit")), use(t((b, c, size(h), w)))]

        def run(ts):
            return rrm_ops.Lattice(ts[ids[0]]).filter(ts[ids[1]], normalize="symmetric")
    else:
        ids = [use(t((b, 3, h, w), torch.float32, "unit")), use(t((b, max(c, 1), size(h), w))),
               use(t((b, h, w), torch.float32, "unit")), use(t((b, 1, h, w), torch.float32, "zeros"))]

        def run(ts):
            images, probs, rois, seg = (ts[i] for i in ids)
            return rrm_ops.dense_energy_loss(images * 255 if images.is_floating_point() else images, probs, rois,
                                             seg, scale_factor=1.0)

    laid_out = [pair[1] for pair in pairs]
    contiguous = [pair[1].contiguous() for pair in pairs]
    return (lambda: run(laid_out)), (lambda: run(contiguous))


def _outputs(result: Any) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, (tuple, list)):
        return [r for r in result if isinstance(r, torch.Tensor)]
    raise AssertionError(f"unexpected result of type {type(result).__name__}")


def fuzz(examples: int) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    outcomes: Counter = Counter()
    specs = st.fixed_dictionaries({
        "op": st.sampled_from(FUZZED),
        "batch": st.integers(0, 2),
        "classes": st.integers(0, 4),
        "height": st.integers(0, 6),
        "width": st.integers(0, 6),
        "dtype": st.sampled_from(DTYPES),
        "values": st.sampled_from(VALUE_KINDS),
        "layout": st.sampled_from(LAYOUT_KINDS),
        "shape_off": st.sampled_from((False, False, False, True)),
        "seed": st.integers(0, 2**32 - 1),
    })

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(specs)
    def check(spec: dict) -> None:
        _emit({"example": {k: str(v) for k, v in spec.items()}})
        laid_out, contiguous = fuzz_call(spec)
        try:
            result = laid_out()
        except (TypeError, ValueError, RuntimeError) as error:
            with_copies: Exception | None = None
            try:
                contiguous()
            except (TypeError, ValueError, RuntimeError) as other:
                with_copies = other
            assert type(with_copies) is type(error), f"{error!r} but with contiguous inputs {with_copies!r}"
            outcomes[(spec["op"], type(error).__name__)] += 1
            return
        expected = contiguous()
        for a, e in zip(_outputs(result), _outputs(expected)):
            assert a.shape == e.shape and a.dtype == e.dtype
            same = (a == e) | (a != a) & (e != e) if a.is_floating_point() else a == e
            assert bool(same.all()), f"{spec['op']}: a {spec['layout']} layout changed {int((~same).sum())} values"
        outcomes[(spec["op"], "returned")] += 1

    check()
    _emit({"summary": {f"{op}: {outcome}": n for (op, outcome), n in sorted(outcomes.items())},
           "examples": sum(outcomes.values())})


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "table":
        run_table(sys.argv[2:])
    else:
        fuzz(int(sys.argv[2]))
