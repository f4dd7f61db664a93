"""The service's settings, with their defaults; light enough for ``lungseg --help`` to import.

:class:`ServeSettings` is the one object that says how the service runs: which weights, on which
device and engine, and what it accepts and holds at once. ``lungseg serve`` builds it from its
flags; :func:`lungseg.serve.create_app` and :func:`lungseg.serve.server.run_server` read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lungseg.data.io import DEFAULT_MAX_PIXELS as READER_MAX_PIXELS

DEVICES = ("auto", "cpu", "cuda")
"""``auto``: CUDA when a GPU is available, else the CPU (as :func:`lungseg.runtime.resolve_runtime`
decides)."""
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""``auto``: bf16 on a GPU that has it (else fp16), and on a CPU with native bf16 kernels (else
fp32), as :func:`lungseg.runtime.resolve_runtime` decides; onnxruntime runs fp32 only."""
BACKENDS = ("auto", "torch", "onnxruntime")
"""``auto``: onnxruntime for a ``.onnx`` file, torch otherwise (by the weights' suffix)."""

DEFAULT_MAX_UPLOAD_BYTES = 64 * 2**20
"""Largest upload: an uncompressed 16-bit DICOM of a 4k x 5k detector (about 40 MB) fits."""
DEFAULT_MAX_PIXELS = 36_000_000
"""Largest image served (6000 x 6000). Lower than the reader's default because a request holds
about 20 bytes per pixel while it is segmented (see :mod:`lungseg.serve.pool`)."""
MULTIPART_ALLOWANCE = 64 * 1024
"""Bytes a request body may exceed the upload limit by: multipart boundaries and part headers."""
DEFAULT_READ_TIMEOUT_S = 60.0
"""Seconds a client has to send a request's headers, and again its body (nginx's defaults for
``client_header_timeout`` and ``client_body_timeout``). The body's is a deadline for all of it,
not a pause between reads, so trickling a byte at a time does not hold a connection longer:
the largest upload at the default limits needs about 9 Mbit/s."""
DEFAULT_MAX_CONNECTIONS = 64
"""Open connections served at once (uvicorn's ``limit_concurrency``); a request on a connection
beyond them gets a plain-text 503. It bounds what clients hold between them: each connection
buffers at most 64 KiB of unread request and spools at most 1 MiB of an upload in memory (the
rest in the temporary folder) while the form is parsed."""
KEEP_ALIVE_S = 5
"""Seconds an idle kept-alive connection stays open (uvicorn's default, stated)."""
MAX_HEADER_BYTES = 16 * 1024
"""Bytes of a request line and headers buffered while still incomplete (h11's default, stated):
a client that sends more without ending its headers gets 400."""
GRACEFUL_SHUTDOWN_S = 30
"""Seconds a shutdown waits for requests in flight (a queued segmentation takes seconds)."""


@dataclass(frozen=True)
class ServeSettings:
    """How the service runs: the model, where it runs, and what it accepts and holds at once.

    Attributes:
        weights: a lungseg safetensors file, or an ONNX file written by ``lungseg export``;
            None serves the model shipped in the package.
        device: ``auto``, ``cpu`` or ``cuda`` (see :data:`DEVICES`).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :data:`PRECISIONS`).
        backend: ``auto``, ``torch`` or ``onnxruntime`` (see :data:`BACKENDS`).
        host, port: where :func:`~lungseg.serve.server.run_server` listens.
        max_upload_bytes: largest uploaded file; bigger ones get 413 while they stream in.
        max_pixels: largest image (height x width); bigger ones get 413 before decoding.
        threads: inference threads, all sharing the one loaded model: the segmentations run
            at once (one process; each thread holds one image's arrays).
        max_queue: requests that may wait for a free thread; more get 503 with Retry-After.
        result_ttl_s: seconds the result PNGs stay downloadable.
        max_results: results kept at most; the oldest go first.
        read_timeout_s: seconds a client has to send the headers, and again the body; a slower
            body gets 408, slower headers a closed connection.
        max_connections: connections served at once; requests on more get 503.
        temp_dir: where the private results folder is created (default: the system's
            temporary folder).
    """

    weights: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    threads: int = 1
    max_queue: int = 8
    result_ttl_s: float = 600.0
    max_results: int = 64
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    temp_dir: Path | None = None

    def __post_init__(self) -> None:
        # Paths given as strings are accepted and stored as Paths (the dataclass is frozen).
        for name in ("weights", "temp_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        for name, choices in (
            ("device", DEVICES),
            ("precision", PRECISIONS),
            ("backend", BACKENDS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"unknown {name} {getattr(self, name)!r}; use one of: {', '.join(choices)}"
                )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.max_upload_bytes < 1:
            raise ValueError(f"max_upload_bytes must be positive, got {self.max_upload_bytes}")
        if not 0 < self.max_pixels <= READER_MAX_PIXELS:
            raise ValueError(
                f"max_pixels must be in 1..{READER_MAX_PIXELS:,}, got {self.max_pixels}"
            )
        if self.threads < 1 or self.max_queue < 0:
            raise ValueError(
                f"need threads >= 1 and max_queue >= 0, got {self.threads} and {self.max_queue}"
            )
        if self.result_ttl_s <= 0 or self.max_results < 1:
            raise ValueError(
                f"need result_ttl_s > 0 and max_results >= 1, "
                f"got {self.result_ttl_s} and {self.max_results}"
            )
        if self.read_timeout_s <= 0 or self.max_connections < 1:
            raise ValueError(
                f"need read_timeout_s > 0 and max_connections >= 1, "
                f"got {self.read_timeout_s} and {self.max_connections}"
            )

    @property
    def backend_or_none(self) -> str | None:
        """The backend for :meth:`Segmenter.from_pretrained`: None for ``auto`` (by suffix)."""
        return None if self.backend == "auto" else self.backend


def describe_bytes(count: int) -> str:
    """A byte count in words for messages: ``64 MiB``, ``1.5 KiB``, ``900 bytes``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:g} {unit}"
    return f"{count} bytes"
