"""Predict segmentation masks of a split with a trained RRM (or step-2 DeepLab) network.

    python -m rrm.infer --checkpoint C [--data-root D] [--split val] --out O
        [--scales 1,0.5,1.5,2] [--flip] [--crf] [--batch-size N] [--device cpu|cuda|auto]
        [--save-probs] [--backbone B] [--voc-submission] [--overwrite]

The checkpoint is an rrm training checkpoint (``last.pth``) or a plain state dict such as
RRM's ``RRM_final.pth`` (see :mod:`rrm.evaluation.model_loading`). Each image is predicted
from the segmentation branch's softmax, averaged over ``--scales`` (and their mirror images
with ``--flip``); ``--crf`` refines them with RRM's inference dense CRF
(``rrm_ops.INFERENCE_CRF``). The defaults (scale 1, no flip, no CRF) are the fast
single-scale prediction; RRM's inference protocol is ``--scales 0.75,1,1.25 --flip --crf``.
``--data-root`` defaults to the embedded synthetic dataset.

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
from collections.abc import Sequence
from pathlib import Path

from rrm.evaluation.prediction import PredictionOptions, add_prediction_arguments
from rrm.evaluation.prediction_files import PROBS_DIR, OutputLayout, predict_split
from rrm.data import data_root_of
from rrm.utils.cli import CommandParser, add_data_root_argument, run_command
from rrm.utils.devices import resolve_device


def build_parser() -> CommandParser:
    parser = CommandParser("python -m rrm.infer", __doc__)
    parser.add_argument("--checkpoint", required=True,
                        help="rrm training checkpoint (last.pth) or a state dict (RRM_final.pth)")
    add_data_root_argument(parser, "holding the images")
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


def infer(args: argparse.Namespace) -> int:
    """Predict every image of the split whose outputs are not there yet."""
    device = resolve_device(args.device)
    layout = OutputLayout(Path(args.out), args.voc_submission, args.save_probs)
    options = PredictionOptions(tuple(args.scales), args.flip, args.crf)
    predict_split(args.checkpoint, data_root_of(args.data_root), args.split, layout, options, args.batch_size, device,
                  title=f"split {args.split}", backbone=args.backbone, overwrite=args.overwrite)
    print(f"masks in {layout.mask_dir}" + (f"; probabilities in {layout.out / PROBS_DIR}" if args.save_probs else ""))
    if args.voc_submission:
        print(f"to submit: cd {layout.out} && tar czf results.tgz results")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), infer, argv)


if __name__ == "__main__":
    sys.exit(main())
