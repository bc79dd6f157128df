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
from pathlib import Path

from rrm.data import data_root_of
from rrm.evaluation.prediction import DEFAULT_IGNORE_BELOW, PredictionOptions, add_prediction_arguments
from rrm.evaluation.prediction_files import export_pseudo_labels
from rrm.utils.cli import CommandParser, add_data_root_argument, run_command
from rrm.utils.devices import resolve_device


def build_parser() -> CommandParser:
    parser = CommandParser("python -m rrm.pseudo_labels", __doc__)
    parser.add_argument("--checkpoint", required=True, help="one-step checkpoint (RUN/last.pth) or a state dict")
    add_data_root_argument(parser, "holding the images")
    parser.add_argument("--split", default="train", help="image list name or list file (default: train)")
    parser.add_argument("--out", required=True, help="folder of the pseudo-label PNGs")
    add_prediction_arguments(parser, batch_size=8)
    parser.add_argument("--ignore-below", type=float, default=DEFAULT_IGNORE_BELOW,
                        help=f"write 255 where the top probability is below this (default: {DEFAULT_IGNORE_BELOW})")
    return parser


def export(args: argparse.Namespace) -> int:
    data_root = data_root_of(args.data_root)
    options = PredictionOptions(tuple(args.scales), args.flip, args.crf, args.ignore_below)
    summary = export_pseudo_labels(args.checkpoint, data_root, args.split, args.out, options, args.batch_size,
                                   resolve_device(args.device))
    print(f"{summary.written} pseudo labels written, {summary.skipped} already there, in {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), export, argv)


if __name__ == "__main__":
    sys.exit(main())
