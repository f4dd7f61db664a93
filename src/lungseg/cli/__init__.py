"""The ``lungseg`` console script.

One parser, one subcommand module per verb (``data``, ``models``, ``train``, ...). Each module
exposes ``register(subparsers)`` which adds its parser and sets ``func`` to a handler
``handler(args) -> int``. Handlers import heavy code lazily so ``lungseg --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from lungseg import __version__
from lungseg.errors import LungsegError

log = logging.getLogger("lungseg")

# Subcommand modules under lungseg.cli, in the order --help lists them.
COMMANDS = ("data", "models", "train", "evaluate", "export", "predict", "serve")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults in --help, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, [], False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lungseg",
        description="Chest X-ray lung segmentation with MSAG-UNet.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lungseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"lungseg.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 1 a problem, 2 a usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LungsegError as err:
        print(f"lungseg {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lungseg {args.command}: interrupted", file=sys.stderr)
        return 130


def add_parser(
    subparsers: argparse._SubParsersAction, name: str, help: str
) -> argparse.ArgumentParser:
    """Add a subcommand parser with the house style (defaults shown in --help)."""
    return subparsers.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
