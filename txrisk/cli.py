"""What the trainer's and scorer's command lines share: one-line errors, logging."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from aiokafka.errors import KafkaError

from txrisk.errors import UserError

logger = logging.getLogger(__name__)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def configure_logging(level: str | None = None, log_format: str | None = None) -> None:
    """Logs on stderr: readable text, or one JSON object a line when
    TXRISK_LOG_FORMAT=json; the level comes from TXRISK_LOG_LEVEL."""
    level = level or os.environ.get("TXRISK_LOG_LEVEL", "INFO")
    log_format = log_format or os.environ.get("TXRISK_LOG_FORMAT", "text")
    handler = logging.StreamHandler(sys.stderr)
    if log_format.strip().lower() == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",  # ISO-8601 in UTC
            )
        )
    else:
        # An unknown format falls back to text; the scorer's settings refuse it.
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    logging.basicConfig(level=level.upper(), handlers=[handler])
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
    except OSError as exc:
        # A path the user gave that cannot be read or written.
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:
        print(
            f"{prog}: error: Kafka: {exc}; check KAFKA_BOOTSTRAP_SERVERS or "
            "--bootstrap-servers",
            file=sys.stderr,
        )
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


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
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
    level = getattr(args, "log_level", None) or os.environ.get(
        "TXRISK_LOG_LEVEL", "INFO"
    )
    if level.upper() not in logging.getLevelNamesMapping():
        parser.error(
            f"log level {level!r} (--log-level or TXRISK_LOG_LEVEL) is not one of "
            "DEBUG, INFO, WARNING, ERROR"
        )
    configure_logging(level)
    return run(parser.prog, args.command, args)
