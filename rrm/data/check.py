"""Validate a VOC-layout dataset and print what it holds.

    python -m rrm.data.check ROOT [--splits train train_aug val] [--deep]

For each split whose list exists: the number of images, how many have a mask in each mask
folder, where the image-level labels come from and how many images carry each class.
``--deep`` also decodes every image and mask and checks their sizes and values (slow on
the full VOC). The first problem ends the run with one ``error:`` line naming the path and
exit status 2. The checks are :func:`rrm.data.inventory.check_dataset`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rrm.data.inventory import DEFAULT_SPLITS, check_dataset
from rrm.utils.cli import CommandParser, run_command


def build_parser() -> CommandParser:
    parser = CommandParser("python -m rrm.data.check", __doc__.split("\n\n")[0])
    parser.add_argument("root", help="the VOC2012 folder (holding JPEGImages, ImageSets, ...)")
    parser.add_argument("--splits", nargs="+", default=list(DEFAULT_SPLITS), help="list names to check")
    parser.add_argument("--deep", action="store_true", help="decode every image and mask")
    return parser


def report(args: argparse.Namespace) -> int:
    print(check_dataset(args.root, args.splits, args.deep))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), report, argv)


if __name__ == "__main__":
    sys.exit(main())
