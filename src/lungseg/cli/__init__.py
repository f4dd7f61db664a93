"""The ``lungseg`` console script.

One parser, one subcommand module per verb (``data``, ``models``, ``train``, ...). Each module
exposes ``register(subparsers)`` which adds its parser and sets ``func`` to a handler
``handler(args) -> int``. Handlers import heavy code lazily so ``lungseg --help`` is instant.

House rules every subcommand follows through the helpers here:

- :func:`add_parser` makes the subcommand's parser: ``--help`` shows every option's default
  (:class:`HelpFormatter`), and a wrong argument is one line on stderr and exit code 2
  (:class:`Parser`), never the usage block or a traceback.
- Numbers are checked while parsing (:func:`positive_int`, :func:`non_negative_int`,
  :func:`probability`); paths are checked by the handler before any work
  (:func:`check_exists`, :func:`check_inputs`, :func:`check_output_folder`,
  :func:`check_output_file`), which raise :class:`UsageError`: exit code 2 as well. Parsing
  itself never touches the file system.
- The same concept has the same flag everywhere: ``--batch-size`` (images per forward pass),
  ``--workers`` (DataLoader worker processes), ``--json PATH``, and ``--device`` /
  ``--precision`` from :func:`add_runtime_options` (``auto`` by default).
"""

from __future__ import annotations

import argparse
import glob
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from lungseg import __version__
from lungseg.errors import LungsegError

if TYPE_CHECKING:
    from lungseg.inference import Segmenter

log = logging.getLogger("lungseg")

# Subcommand modules under lungseg.cli, in the order --help lists them.
COMMANDS = ("data", "models", "train", "evaluate", "export", "predict", "serve")

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class UsageError(LungsegError):
    """A wrong argument found by a handler (a missing input, ``-o`` onto a file): exit code 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``lungseg CMD: error: ...``), exit code 2.

    argparse prints the whole usage block before the error; for a command with a dozen options
    that buries the one line that matters. The usage stays one ``--help`` away.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to every option's help that has a default to show.

    Nothing is appended when there is none (``None``, an empty list), when the help already
    says its default in words (it contains "default"), or for switches: a ``store_true``
    switch is off unless given, and a ``store_false`` one (``--no-postprocess``) must say in its
    help what happens without it, since "(default: True)" says nothing to a reader.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or default == []
            or "default" in text.lower()
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return action.help
        if isinstance(default, (list, tuple)):
            shown = " ".join(str(value) for value in default)
        else:
            shown = str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    """Run the CLI; returns the process exit code (0 ok, 1 a problem, 2 a usage error).

    A usage error found while parsing (an unknown option, ``--batch-size 0``) exits with code 2
    through ``SystemExit``, as ``--help`` exits with 0; one found by a handler
    (:class:`UsageError`) is returned as 2.
    """
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
    except UsageError as err:
        print(f"lungseg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except LungsegError as err:
        print(f"lungseg {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lungseg {args.command}: interrupted", file=sys.stderr)
        return 130


def add_parser(
    subparsers: argparse._SubParsersAction, name: str, help: str
) -> argparse.ArgumentParser:
    """Add a subcommand parser with the house style (defaults shown in --help, one-line errors)."""
    return subparsers.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)


# --- argument types: checked while parsing, a wrong value is one line and exit code 2 ----------


def positive_int(text: str) -> int:
    """An integer of at least 1 (``--batch-size``)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0 (``--workers``: 0 decodes in the main process)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A number above 0 (``--result-ttl``); NaN is refused too."""
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def probability(text: str) -> float:
    """A number strictly between 0 and 1 (``--threshold``)."""
    value = _float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def add_decoding_options(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """``--batch-size`` and ``--workers``, as every command that reads many X-rays has them."""
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=batch_size,
        metavar="N",
        help="images per forward pass",
    )
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=1,
        metavar="N",
        help="DataLoader worker processes decoding images; 0 decodes in the main process",
    )


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--precision``, both ``auto`` by default (see lungseg.runtime)."""
    parser.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="where the model runs; auto = the GPU when CUDA is available, else the CPU",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="autocast precision; auto = bf16 on a GPU that supports it (else fp16), and on a "
        "CPU the faster of fp32 and bf16 as timed for this network on this machine (once, "
        "cached); the onnxruntime backend runs fp32",
    )


def describe_runtime(segmenter: Segmenter) -> str:
    """What ``auto`` became, in one line: ``torch on cuda:0, bf16 autocast``."""
    if segmenter.backend == "onnxruntime":
        providers = segmenter.model.session.get_providers()
        return f"onnxruntime with {providers[0] if providers else 'no provider'}, fp32"
    choice = segmenter.precision_choice  # what a CPU's "auto" measured
    if choice is not None:
        return f"torch on {segmenter.runtime.device}, precision auto: {choice.describe()}"
    dtype = segmenter.runtime.dtype
    if dtype is None:
        precision = "fp32"
    else:
        name = str(dtype).removeprefix("torch.")
        precision = {"bfloat16": "bf16", "float16": "fp16"}.get(name, name) + " autocast"
    return f"torch on {segmenter.runtime.device}, {precision}"


# --- path checks: run by handlers before any work, a wrong path is one line and exit code 2 ----


def check_exists(path: Path | None, flag: str) -> None:
    """``path`` (given with ``flag``) must exist; None (not given) passes."""
    if path is not None and not path.exists():
        raise UsageError(f"{flag}: {path}: no such file or folder")


def check_inputs(inputs: Sequence[str]) -> None:
    """Every input must be an existing file or folder, or a glob that matches something."""
    for raw in inputs:
        if glob.has_magic(raw):
            if not glob.glob(raw, recursive=True):
                raise UsageError(f"{raw}: the pattern matches nothing")
        elif not Path(raw).exists():
            raise UsageError(f"{raw}: no such file or folder")


def check_output_folder(path: Path, flag: str) -> None:
    """``path`` is a folder to write into: it may be missing or a folder, not a file."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag}: {path} is a file; give a folder to write the outputs into")


def check_output_file(path: Path | None, flag: str) -> None:
    """``path`` is a file to write: it may be missing or a file, not a folder."""
    if path is not None and path.is_dir():
        raise UsageError(f"{flag}: {path} is a folder; give the name of the file to write")
