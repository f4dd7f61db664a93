"""``lungseg serve``: the REST API and the web page, with uvicorn (the ``serve`` extra)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lungseg.cli import add_parser
from lungseg.errors import LungsegError
from lungseg.serve.settings import (
    GRACEFUL_SHUTDOWN_S,
    KEEP_ALIVE_S,
    MAX_HEADER_BYTES,
    ServeSettings,
    describe_bytes,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = ServeSettings()
    parser = add_parser(
        subparsers, "serve", "serve the REST API and the web page (http://HOST:PORT/)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument(
        "--weights", type=Path, help="lungseg safetensors file (default: shipped model)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults.max_concurrency,
        help="segmentations run at once (threads sharing one model)",
    )
    parser.add_argument(
        "--queue",
        type=int,
        default=defaults.max_queue,
        help="requests that may wait for a worker; more get 503 with Retry-After",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=defaults.max_upload_bytes / 2**20,
        help="largest upload in MiB (413 above)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=defaults.max_pixels,
        help="largest image, height x width (413 above)",
    )
    parser.add_argument(
        "--result-ttl",
        type=float,
        default=defaults.result_ttl_s,
        help="seconds the result PNGs stay downloadable",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=defaults.read_timeout_s,
        help="seconds a client has to send a request's headers, and again its body "
        "(408 for a slower body; a connection with slower headers is closed)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help="connections served at once; a request on one more gets 503",
    )
    parser.epilog = (
        f"Also fixed: an idle kept-alive connection closes after {KEEP_ALIVE_S} s, request "
        f"headers still unfinished after {describe_bytes(MAX_HEADER_BYTES)} get 400, and "
        f"Ctrl+C waits at most {GRACEFUL_SHUTDOWN_S} s for requests in flight."
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from lungseg.serve import create_app
        from lungseg.serve.server import run_server
    except ImportError as err:
        raise LungsegError(
            f"lungseg serve needs the serve extra ({err.name} is missing): "
            "pip install 'lungseg[serve]'"
        ) from None
    try:
        app = create_app(
            args.weights,
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            max_pixels=args.max_pixels,
            max_concurrency=args.workers,
            max_queue=args.queue,
            result_ttl_s=args.result_ttl,
            read_timeout_s=args.read_timeout,
        )
        settings = ServeSettings(
            read_timeout_s=args.read_timeout, max_connections=args.max_connections
        )
    except ValueError as err:
        raise LungsegError(str(err)) from None
    print(f"lungseg serve: http://{args.host}:{args.port}/ (API docs at /docs); Ctrl+C stops")
    run_server(app, args.host, args.port, settings)
    return 0
