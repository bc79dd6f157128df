"""Predict segmentation masks of a split with a trained RRM (or step-2 DeepLab) network.

    python -m rrm.infer --checkpoint C --data-root D [--split val] --out O
        [--scales 1,0.5,1.5,2] [--flip] [--crf] [--batch-size N] [--device cpu|cuda|auto]
        [--save-probs] [--backbone B] [--voc-submission] [--overwrite]

The checkpoint is an rrm training checkpoint (``last.pth``) or a plain state dict such as
RRM's ``RRM_final.pth`` (see :mod:`rrm.evaluation.prediction`). Each image is predicted from the
segmentation branch's softmax, averaged over ``--scales`` (and their mirror images with
``--flip``); the defaults (scale 1, no flip) are RRM's own inference. ``--crf`` refines the
probabilities with RRM's inference dense CRF (Gaussian 3/3, bilateral 83/5/4, 10 iterations).

Outputs, one per image of the split:

- ``O/<name>.png``: class indices 0..C as a VOC palette PNG at the image's size; with
  ``--voc-submission`` instead ``O/results/VOC2012/Segmentation/comp6_test_cls/<name>.png``,
  the layout the PASCAL VOC evaluation server expects (comp6: methods trained on more than
  VOC's own segmentation masks, e.g. ImageNet-pretrained backbones); archive it with
  ``tar czf results.tgz results`` inside ``O``.
- with ``--save-probs``: ``O/probs/<name>.npy``, float16 ``[C + 1, H, W]``: the averaged
  softmax (the CRF marginals with ``--crf``), channel 0 background; the mask is its argmax.

Images whose outputs exist are skipped unless ``--overwrite``, so an interrupted run resumes
where it stopped; every file is written to a temporary name and renamed into place.
Images of one size are batched together (``--batch-size``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from rrm.data import IGNORE_INDEX, DatasetError, write_mask
from rrm.evaluation.prediction import (
    CommandError,
    crf_available,
    image_paths,
    load_batch,
    load_segmentation_model,
    refine_with_crf,
    resolve_device,
    same_size_batches,
    segmentation_probabilities,
    split_names,
    write_atomic,
)

SUBMISSION_DIR = Path("results", "VOC2012", "Segmentation", "comp6_test_cls")
PROBS_DIR = "probs"
PROGRESS_LINES = 10  # progress lines printed over a run


@dataclass(frozen=True)
class OutputLayout:
    """Where the outputs of image ``name`` go under ``out`` (see the module docstring)."""

    out: Path
    voc_submission: bool = False
    save_probs: bool = False

    @property
    def mask_dir(self) -> Path:
        return self.out / SUBMISSION_DIR if self.voc_submission else self.out

    def mask_path(self, name: str) -> Path:
        return self.mask_dir / f"{name}.png"

    def probs_path(self, name: str) -> Path:
        return self.out / PROBS_DIR / f"{name}.npy"

    def is_complete(self, name: str) -> bool:
        """All outputs of ``name`` exist (each is renamed into place only once complete)."""
        return self.mask_path(name).is_file() and (not self.save_probs or self.probs_path(name).is_file())


@dataclass(frozen=True)
class PredictionOptions:
    """Test-time augmentation and refinement (see :func:`predict_batch`), and the labelling:
    pixels whose top probability is below ``ignore_below`` get 255 (ignore) in the mask."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crf: bool = False
    ignore_below: float = 0.0


def predict_batch(network: torch.nn.Module, images: torch.Tensor, images_uint8: torch.Tensor,
                  options: PredictionOptions) -> torch.Tensor:
    """Class probabilities float32 ``[B, L, H, W]`` of normalised images float32
    ``[B, 3, H, W]`` (``images_uint8``: the same pixels, uint8, used by the CRF)."""
    probabilities = segmentation_probabilities(network, images, options.scales, options.flip)
    if options.crf:
        probabilities = refine_with_crf(probabilities, images_uint8)
    return probabilities


def labels_of(probabilities: torch.Tensor, ignore_below: float = 0.0) -> torch.Tensor:
    """uint8 ``[B, H, W]`` masks of probabilities ``[B, L, H, W]``: the argmax, and
    :data:`~rrm.data.IGNORE_INDEX` where the top probability is below ``ignore_below``."""
    top, labels = probabilities.max(dim=1)
    return labels.to(torch.uint8).masked_fill(top < ignore_below, IGNORE_INDEX)


def save_outputs(layout: OutputLayout, names: Sequence[str], probabilities: torch.Tensor,
                 ignore_below: float = 0.0) -> None:
    """Write the mask (:func:`labels_of`) and, if the layout asks for them, the float16
    probabilities ``[L, H, W]`` of each image of a batch; the probabilities go first, so an
    existing mask means the image is complete."""
    masks = labels_of(probabilities, ignore_below).cpu().numpy()
    stored = probabilities.half().cpu().numpy() if layout.save_probs else None
    for index, name in enumerate(names):
        if stored is not None:
            write_atomic(layout.probs_path(name), partial(np.save, arr=stored[index]))
        write_atomic(layout.mask_path(name), partial(write_mask, mask=masks[index]))


def predict_images(network: torch.nn.Module, names: Sequence[str], paths: Sequence[Path], layout: OutputLayout,
                   options: PredictionOptions, batch_size: int, device: torch.device) -> None:
    """Predict and save the images ``paths`` (named ``names``) in same-size batches,
    printing progress about :data:`PROGRESS_LINES` times."""
    batches = same_size_batches(paths, batch_size)
    report_every = max(1, len(batches) // PROGRESS_LINES)
    started, done = time.perf_counter(), 0
    for number, indices in enumerate(batches, start=1):
        batch = load_batch([names[i] for i in indices], [paths[i] for i in indices])
        probabilities = predict_batch(network, batch.images.to(device), batch.images_uint8.to(device), options)
        save_outputs(layout, batch.names, probabilities, options.ignore_below)
        done += len(indices)
        if number % report_every == 0 or number == len(batches):
            rate = done / max(time.perf_counter() - started, 1e-9)
            print(f"[{done}/{len(names)}] {rate:.2f} images/s", flush=True)


def run(args: argparse.Namespace) -> int:
    """Predict every image of the split whose outputs are not there yet; returns the exit status."""
    device = resolve_device(args.device)
    if args.crf and not crf_available():
        raise CommandError("--crf needs rrm_ops.dense_crf, which the installed rrm_ops lacks; rebuild the extension")
    names = split_names(args.data_root, args.split)
    model = load_segmentation_model(args.checkpoint, args.backbone)
    layout = OutputLayout(Path(args.out), args.voc_submission, args.save_probs)
    pending = [name for name in names if args.overwrite or not layout.is_complete(name)]
    paths = image_paths(args.data_root, pending)
    print(f"model: {model.description}; device: {device}")
    print(f"split {args.split}: {len(names)} images, {len(names) - len(pending)} already done, "
          f"{len(pending)} to predict")
    options = PredictionOptions(tuple(args.scales), args.flip, args.crf)
    predict_images(model.network.to(device), pending, paths, layout, options, args.batch_size, device)
    print(f"masks in {layout.mask_dir}" + (f"; probabilities in {layout.out / PROBS_DIR}" if args.save_probs else ""))
    if args.voc_submission:
        print(f"to submit: cd {layout.out} && tar czf results.tgz results")
    return 0


def scales_arg(text: str) -> tuple[float, ...]:
    """argparse type of ``--scales``: positive numbers separated by commas."""
    try:
        scales = tuple(float(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas (1,0.5,1.5,2), got {text!r}") from None
    if not all(scale > 0 for scale in scales):
        raise argparse.ArgumentTypeError(f"scales must be > 0, got {text!r}")
    return scales


def positive_int_arg(text: str) -> int:
    """argparse type of a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def add_prediction_arguments(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """``--scales``, ``--flip``, ``--crf``, ``--batch-size`` (default ``batch_size``) and
    ``--device``: the options of :class:`PredictionOptions` and where predictions run."""
    parser.add_argument("--scales", type=scales_arg, default=(1.0,), help="comma-separated test scales (default: 1)")
    parser.add_argument("--flip", action="store_true", help="also average over mirrored images")
    parser.add_argument("--crf", action="store_true", help="refine with RRM's inference dense CRF")
    parser.add_argument("--batch-size", type=positive_int_arg, default=batch_size,
                        help=f"images of one size per batch (default: {batch_size})")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rrm.infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="rrm training checkpoint (last.pth) or a state dict (RRM_final.pth)")
    parser.add_argument("--data-root", required=True, help="VOC-layout folder (holding JPEGImages, ImageSets, ...)")
    parser.add_argument("--split", default="val", help="image list name (val, test, ...) or list file (default: val)")
    parser.add_argument("--out", required=True, help="output folder")
    add_prediction_arguments(parser, batch_size=1)
    parser.add_argument("--backbone", default=None,
                        help="use instead of the checkpoint's backbone: resnet38, resnet101 (DeepLab), small")
    parser.add_argument("--save-probs", action="store_true", help="also write probabilities to OUT/probs/<name>.npy")
    parser.add_argument("--voc-submission", action="store_true",
                        help="write masks to OUT/results/VOC2012/Segmentation/comp6_test_cls (for --split test)")
    parser.add_argument("--overwrite", action="store_true", help="redo images whose outputs exist")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (CommandError, DatasetError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
