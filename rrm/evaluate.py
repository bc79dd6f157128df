"""Score predicted masks against the ground truth of a split.

    python -m rrm.evaluate --pred O [--data-root D] [--split val] [--json out.json]

``--data-root`` defaults to the embedded synthetic dataset. ``O/<name>.png`` must exist for every image of the split, at the size of its ground-truth
mask (``SegmentationClass``, else ``SegmentationClassAug``). Predictions may be palette,
grey-level or VOC-coloured RGB PNGs holding 0..20 (``rrm.infer`` writes palette PNGs).

Pixels whose ground truth is 255 (VOC's boundary/void band) are not counted. A prediction of
255 on a counted pixel (pseudo labels mark unreliable pixels so) counts as a miss for the
ground-truth class and as a hit for no class; the report says how many such pixels there were.

Prints per-class IoU (VOC class names), mIoU (mean over classes present in the ground truth
or the predictions), pixel accuracy and mean class accuracy, in percent; ``--json`` also
writes them as fractions (absent classes: null). Problems (missing predictions, size
mismatches, bad values) end the run with one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rrm.evaluation.scoring import evaluate_split
from rrm.data import data_root_of
from rrm.utils.cli import CommandParser, add_data_root_argument, run_command
from rrm.utils.files import write_atomic


def build_parser() -> CommandParser:
    parser = CommandParser("python -m rrm.evaluate", __doc__)
    parser.add_argument("--pred", required=True, help="folder of predicted masks <name>.png")
    add_data_root_argument(parser, "with the ground-truth masks")
    parser.add_argument("--split", default="val", help="image list name or list file path (default: val)")
    parser.add_argument("--json", default=None, help="also write the scores to this JSON file")
    return parser


def evaluate(args: argparse.Namespace) -> int:
    report = evaluate_split(args.pred, data_root_of(args.data_root), args.split)
    if args.json:
        text = json.dumps({"pred": str(args.pred), "split": args.split, **report.to_json()}, indent=2)
        write_atomic(Path(args.json), lambda path: path.write_text(text + "\n"))
    print(report.table())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
