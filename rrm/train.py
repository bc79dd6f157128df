"""RRM training: ``python -m rrm.train [options]`` (``torchrun`` for several processes).

With no options it trains one-step RRM with the small backbone on the embedded synthetic
dataset on the CPU. Each step: multi-scale CAMs -> reliable region labels (two dense CRFs +
pruning, batched, on the training device) -> multilabel soft-margin + reliable-region
cross-entropy + dense energy loss -> Adam with a poly learning-rate decay (``--optimizer sgd``:
RRM's SGD with its four parameter groups).

Prints the dataset it uses, a progress line every --log-every steps, a line per validation
and a table of the final metrics. The run folder (--out, default runs/<timestamp>) gets
last.pth, metrics.json (final metrics), metrics.jsonl (every logged value, strict JSON),
curves.png (losses, learning rate, validation mIoU, reliable-label precision and coverage
over the steps), panels/ (images, CAMs, labels), config.yaml and, when the tensorboard
package is installed, tensorboard/ event files. Resuming a finished run changes nothing.

``--stage fcn --pseudo-labels P`` trains step 2 instead: DeepLab with cross-entropy on the
pseudo masks in P (see rrm.training.stages). ``--two-step`` runs one-step RRM, the
pseudo-label export and step 2 in one run folder (see rrm.training.two_step). Usage errors
(bad options, missing files, unusable checkpoints) end the run with one ``error:`` line and
exit status 2.
"""


from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rrm.training.arguments import add_config_arguments
from rrm.training.runner import config_and_checkpoint, run_training
from rrm.training.two_step import run_two_step
from rrm.utils import distributed
from rrm.utils.cli import CommandParser, run_command


def build_parser() -> CommandParser:
    parser = CommandParser("python -m rrm.train", __doc__)
    add_config_arguments(parser)
    parser.add_argument("--stop-at", type=int, default=None,
                        help="stop at this step with a checkpoint, as an interruption would (for time-sliced jobs)")
    parser.add_argument("--two-step", action="store_true",
                        help="one-step RRM (the options above), pseudo labels of the train list, then step 2 "
                             "(stage fcn defaults), in OUT/one_step, OUT/pseudo_labels, OUT/fcn; rerun with the "
                             "same --out to resume")
    parser.add_argument("--fcn-max-steps", type=int, default=None,
                        help="with --two-step: steps of step 2 (default: the stage fcn default)")
    return parser


def train(args: argparse.Namespace) -> int:
    try:
        if args.two_step:
            return run_two_step(args)
        config, checkpoint = config_and_checkpoint(args)
        run_training(config, checkpoint, distributed.setup(config.device), args.stop_at)
        return 0
    finally:
        distributed.teardown()


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), train, argv)


if __name__ == "__main__":
    sys.exit(main())
