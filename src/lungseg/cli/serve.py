"""``lungseg serve``: the REST API and the web page, with uvicorn (the ``serve`` extra)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lungseg.cli import add_parser
from lungseg.errors import LungsegError
from lungseg.serve.settings import ServeSettings


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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from lungseg.serve import create_app
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
        )
    except ValueError as err:
        raise LungsegError(str(err)) from None
    print(f"lungseg serve: http://{args.host}:{args.port}/ (API docs at /docs); Ctrl+C stops")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
