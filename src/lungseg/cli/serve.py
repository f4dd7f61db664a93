"""``lungseg serve``: the REST API and the web page, with uvicorn (the ``serve`` extra)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lungseg.cli import (
    UsageError,
    add_parser,
    add_runtime_options,
    describe_runtime,
    non_negative_int,
    positive_float,
    positive_int,
)
from lungseg.errors import LungsegError
from lungseg.serve.settings import (
    BACKENDS,
    GRACEFUL_SHUTDOWN_S,
    KEEP_ALIVE_S,
    MAX_HEADER_BYTES,
    ServeSettings,
    describe_bytes,
)

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = ServeSettings()
    parser = add_parser(
        subparsers, "serve", "serve the REST API and the web page (http://HOST:PORT/)"
    )
    parser.add_argument("--host", default=defaults.host, help="address to listen on")
    parser.add_argument("--port", type=_port, default=defaults.port, help="TCP port")
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="lungseg .safetensors or exported .onnx (default: the shipped model)",
    )
    parser.add_argument(
        "--backend",
        default=defaults.backend,
        choices=BACKENDS,
        help="inference engine; auto = onnxruntime for an .onnx file, else torch",
    )
    add_runtime_options(parser)
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=defaults.threads,
        metavar="N",
        help="inference threads in this one process, sharing one loaded model: the "
        "segmentations run at once (each holds one image's arrays)",
    )
    parser.add_argument("--workers", type=str, help=argparse.SUPPRESS, action=_RenamedToThreads)
    parser.add_argument(
        "--queue",
        type=non_negative_int,
        default=defaults.max_queue,
        metavar="N",
        help="requests that may wait for a thread; more get 503 with Retry-After",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=positive_float,
        default=defaults.max_upload_bytes / 2**20,
        metavar="MIB",
        help="largest upload in MiB (413 above)",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=defaults.max_pixels,
        metavar="N",
        help="largest image, height x width (413 above)",
    )
    parser.add_argument(
        "--result-ttl",
        type=positive_float,
        default=defaults.result_ttl_s,
        metavar="SECONDS",
        help="seconds the result PNGs stay downloadable",
    )
    parser.add_argument(
        "--max-results",
        type=positive_int,
        default=defaults.max_results,
        metavar="N",
        help="results kept at most; the oldest are dropped first",
    )
    parser.add_argument(
        "--read-timeout",
        type=positive_float,
        default=defaults.read_timeout_s,
        metavar="SECONDS",
        help="seconds a client has to send a request's headers, and again its body "
        "(408 for a slower body; a connection with slower headers is closed)",
    )
    parser.add_argument(
        "--max-connections",
        type=positive_int,
        default=defaults.max_connections,
        metavar="N",
        help="connections served at once; a request on one more gets 503",
    )
    parser.epilog = (
        f"Also fixed: an idle kept-alive connection closes after {KEEP_ALIVE_S} s, request "
        f"headers still unfinished after {describe_bytes(MAX_HEADER_BYTES)} get 400, and "
        f"Ctrl+C waits at most {GRACEFUL_SHUTDOWN_S} s for requests in flight."
    )
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """The one :class:`ServeSettings` the flags describe (a value it refuses: exit code 2)."""
    try:
        return ServeSettings(
            weights=args.weights,
            device=args.device,
            precision=args.precision,
            backend=args.backend,
            host=args.host,
            port=args.port,
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            max_pixels=args.max_pixels,
            threads=args.threads,
            max_queue=args.queue,
            result_ttl_s=args.result_ttl,
            max_results=args.max_results,
            read_timeout_s=args.read_timeout,
            max_connections=args.max_connections,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        from lungseg.serve import create_app
        from lungseg.serve.server import run_server
    except ImportError as err:
        raise LungsegError(
            f"lungseg serve needs the serve extra ({err.name} is missing): "
            "pip install 'lungseg[serve]'"
        ) from None
    app = create_app(settings)
    log.info("%s", describe_runtime(app.state.served.segmenter))
    print(
        f"lungseg serve: http://{settings.host}:{settings.port}/ (API docs at /docs); Ctrl+C stops"
    )
    run_server(app, settings)
    return 0


class _RenamedToThreads(argparse.Action):
    """``--workers``, the old name of ``--threads``: refused with the new name (exit code 2).

    Elsewhere ``--workers`` counts DataLoader processes; here the count was always inference
    threads in one process, so the flag was renamed rather than kept with another meaning.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            f"--workers was renamed --threads (inference threads sharing one model): "
            f"use --threads {values}"
        )


def _port(text: str) -> int:
    value = non_negative_int(text)
    if not value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port, 0 to 65535, got {text!r}")
    return value
