"""Export pseudo labels of a split with a trained one-step RRM network (the masks step 2 trains on).

    python -m rrm.pseudo_labels --checkpoint C [--data-root D] [--split train] --out P
        [--scales 1,0.5,1.5,2] [--flip] [--crf] [--ignore-below T] [--batch-size N] [--device D]

Writes ``P/<name>.png`` for every image of the split: a VOC palette PNG at the image's size
holding the argmax of the segmentation branch's softmax, averaged over ``--scales`` (and
their mirror images with ``--flip``), refined with RRM's inference dense CRF (``--crf``,
through ``rrm_ops.dense_crf``). The checkpoint formats are those of ``rrm.infer``.
``--data-root`` defaults to the embedded synthetic dataset.

Ignore policy: a pixel whose top probability (the CRF marginal with ``--crf``) is below
``--ignore-below`` is written as 255, which step 2's cross-entropy ignores. The default,
:data:`DEFAULT_IGNORE_BELOW`, is 0: every pixel gets a class, because the CRF already settles
the object boundaries where the network is unsure; a threshold trades coverage for precision.

Resuming: an image whose PNG exists is skipped, and every PNG is written to a temporary name
and renamed into place, so an interrupted export restarted with the same command redoes only
the images it had not finished.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rrm.data import DatasetError, ensure_synthetic_dataset
from rrm.infer import OutputLayout, PredictionOptions, add_prediction_arguments, predict_images
from rrm.evaluation.prediction import (
    CommandError,
    crf_available,
    image_paths,
    load_segmentation_model,
    resolve_device,
    split_names,
)

DEFAULT_IGNORE_BELOW = 0.0


@dataclass(frozen=True)
class ExportSummary:
    """What an export did: ``total`` images in this process's share of the split, of which
    ``skipped`` already had their PNG and ``written`` were predicted now."""

    total: int
    skipped: int
    written: int


def export_pseudo_labels(checkpoint: str | Path, data_root: str | Path, split: str, out: str | Path,
                         options: PredictionOptions, batch_size: int = 1, device: torch.device | None = None,
                         rank: int = 0, world_size: int = 1) -> ExportSummary:
    """Write ``out/<name>.png`` for the images of ``split`` that lack one (see the module
    docstring). Process ``rank`` of ``world_size`` handles the images ``rank::world_size``.
    Raises :class:`CommandError` or :class:`DatasetError` with a one-line reason for a
    missing or unsuitable checkpoint, data root or list."""
    device = device or torch.device("cpu")
    if options.crf and not crf_available():
        raise CommandError("--crf needs rrm_ops.dense_crf, which the installed rrm_ops lacks; rebuild the extension")
    if not 0.0 <= options.ignore_below <= 1.0:
        raise CommandError(f"--ignore-below must be in [0, 1], got {options.ignore_below}")
    names = split_names(data_root, split)[rank::world_size]
    model = load_segmentation_model(checkpoint)
    layout = OutputLayout(Path(out))
    pending = [name for name in names if not layout.is_complete(name)]
    paths = image_paths(data_root, pending)
    if rank == 0:
        print(f"model: {model.description}; device: {device}", flush=True)
        print(f"pseudo labels of split {split}: {len(names)} images, {len(names) - len(pending)} already done, "
              f"{len(pending)} to predict", flush=True)
    predict_images(model.network.to(device), pending, paths, layout, options, batch_size, device)
    return ExportSummary(total=len(names), skipped=len(names) - len(pending), written=len(pending))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rrm.pseudo_labels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="one-step checkpoint (RUN/last.pth) or a state dict")
    parser.add_argument("--data-root", default=None, help="VOC-layout folder (default: the embedded synthetic dataset)")
    parser.add_argument("--split", default="train", help="image list name or list file (default: train)")
    parser.add_argument("--out", required=True, help="folder of the pseudo-label PNGs")
    add_prediction_arguments(parser, batch_size=8)
    parser.add_argument("--ignore-below", type=float, default=DEFAULT_IGNORE_BELOW,
                        help=f"write 255 where the top probability is below this (default: {DEFAULT_IGNORE_BELOW})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        data_root = Path(args.data_root) if args.data_root else ensure_synthetic_dataset()
        options = PredictionOptions(tuple(args.scales), args.flip, args.crf, args.ignore_below)
        summary = export_pseudo_labels(args.checkpoint, data_root, args.split, args.out, options, args.batch_size,
                                       resolve_device(args.device))
    except (CommandError, DatasetError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{summary.written} pseudo labels written, {summary.skipped} already there, in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
