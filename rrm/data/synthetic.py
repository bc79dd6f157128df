"""Write the embedded synthetic dataset (see :mod:`rrm.data.synthetic_scenes` and
:mod:`rrm.data.synthetic_dataset`).

    python -m rrm.data.synthetic --out DIR [--n-train N] [--n-val N] [--size S] [--seed K] [--overwrite]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rrm.data.layout import VOC_CLASSES
from rrm.data.synthetic_dataset import DEFAULT_N_TRAIN, DEFAULT_N_VAL, DEFAULT_SEED, generate_synthetic_dataset
from rrm.data.synthetic_scenes import DEFAULT_SIZE, SYNTHETIC_CLASSES
from rrm.utils.cli import CommandParser, run_command


def build_parser() -> CommandParser:
    parser = CommandParser("python -m rrm.data.synthetic", "Write the synthetic VOC-layout dataset.")
    parser.add_argument("--out", required=True, help="output folder (the VOC2012-like root)")
    parser.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN, help="training images")
    parser.add_argument("--n-val", type=int, default=DEFAULT_N_VAL, help="validation images")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="longer image side in pixels")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    return parser


def generate(args: argparse.Namespace) -> int:
    root = generate_synthetic_dataset(args.out, args.n_train, args.n_val, args.size, args.seed, args.overwrite)
    used = ", ".join(f"{VOC_CLASSES[i - 1]} ({shape}, {texture})" for i, (shape, texture) in SYNTHETIC_CLASSES.items())
    print(f"wrote {args.n_train} train + {args.n_val} val images to {root}")
    print(f"classes used: {used}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), generate, argv)


if __name__ == "__main__":
    sys.exit(main())
