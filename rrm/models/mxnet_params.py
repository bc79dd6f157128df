"""Convert the ImageNet ResNet-38 ``.params`` (MXNet) to a PyTorch state dict, without mxnet
(see :mod:`rrm.models.mxnet_weights`).

    python -m rrm.models.mxnet_params SRC.params DST.pth
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rrm.models.mxnet_weights import convert_params_file
from rrm.utils.cli import CommandParser, run_command


def build_parser() -> CommandParser:
    parser = CommandParser("python -m rrm.models.mxnet_params",
                           "Convert the ImageNet ResNet-38 .params (MXNet) to a PyTorch state dict, without mxnet.")
    parser.add_argument("src", help="e.g. ilsvrc-cls_rna-a1_cls1000_ep-0001.params")
    parser.add_argument("dst", help="output .pth")
    return parser


def convert(args: argparse.Namespace) -> int:
    state_dict = convert_params_file(args.src, args.dst)
    print(f"wrote {len(state_dict)} tensors to {args.dst}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), convert, argv)


if __name__ == "__main__":
    sys.exit(main())
