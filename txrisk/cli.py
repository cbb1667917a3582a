"""What the trainer's and scorer's command lines share: one-line errors, logging."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from txrisk.errors import UserError

logger = logging.getLogger(__name__)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def configure_logging(level: str | None = None) -> None:
    """Readable text logs on stderr; the level comes from TXRISK_LOG_LEVEL."""
    level = level or os.environ.get("TXRISK_LOG_LEVEL", "INFO")
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiokafka logs every retry of a broken connection at ERROR; ours say it once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def run(
    prog: str, command: Callable[[argparse.Namespace], int], args: argparse.Namespace
) -> int:
    """Run a subcommand; a user error becomes one line on stderr and exit 2."""
    try:
        return command(args)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def main_entry(build: Callable[[], Parser], argv: Sequence[str] | None) -> int:
    """Parse, configure logging and dispatch to the chosen subcommand."""
    parser = build()
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "log_level", None))
    return run(parser.prog, args.command, args)
