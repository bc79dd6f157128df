"""What the command lines share: their argument parser, argument types and the error
policy (see ``docs/error-policy.md``): a usage error (a bad option, a missing or unusable
file) ends the command with one ``error: ...`` line on stderr and exit status 2, without a
traceback."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from rrm.utils.errors import InputError

EXIT_USAGE = 2  # argparse's own status for bad arguments


def report_error(message: object) -> None:
    """Print ``error: message`` as one line on stderr."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that reports a bad argument as one ``error:`` line (pointing to
    ``--help``) and exits with :data:`EXIT_USAGE`; the description is shown as written."""

    def __init__(self, prog: str, description: str | None) -> None:
        # No abbreviations: a mistyped or shortened option is an error, not another option.
        super().__init__(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                         allow_abbrev=False)

    def error(self, message: str) -> NoReturn:
        report_error(f"{message} (see {self.prog} --help)")
        sys.exit(EXIT_USAGE)


def run_command(parser: argparse.ArgumentParser, command: Callable[[argparse.Namespace], int],
                argv: Sequence[str] | None) -> int:
    """Parse ``argv`` (a bad argument exits, see :class:`CommandParser`), run ``command`` on
    the arguments and return its exit status; an :class:`InputError` or ``OSError`` is
    reported as one ``error:`` line and gives :data:`EXIT_USAGE`."""
    args = parser.parse_args(argv)
    try:
        return command(args)
    except (InputError, OSError) as error:
        report_error(error)
        return EXIT_USAGE


def add_data_root_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--data-root`` (default: the embedded synthetic dataset, see :func:`rrm.data.data_root_of`)."""
    parser.add_argument("--data-root", default=None,
                        help=f"VOC-layout folder {what} (default: the embedded synthetic dataset, generated on first use)")


def parse_scales(value: str | Sequence[float]) -> tuple[float, ...]:
    """Image scales from ``"1,0.5,1.5"`` or a sequence of numbers: a non-empty tuple of
    positive floats. Raises ``ValueError`` saying what was expected."""
    expected = f"expected positive numbers separated by commas (such as 1,0.5,1.5,2), got {value!r}"
    try:
        items = value.split(",") if isinstance(value, str) else list(value)
        scales = tuple(float(item) for item in items)
    except (TypeError, ValueError):
        raise ValueError(expected) from None
    if not scales or not all(math.isfinite(scale) and scale > 0 for scale in scales):
        raise ValueError(expected)
    return scales


def scales_arg(text: str) -> tuple[float, ...]:
    """argparse type of a ``--scales`` option (see :func:`parse_scales`)."""
    try:
        return parse_scales(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive_int_arg(text: str) -> int:
    """argparse type of a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value
