"""Run the app with uvicorn, with connection limits that hold against slow and greedy clients.

uvicorn bounds neither how long a client may take to send its request headers nor how many
connections it serves, by default: a client that opens a connection and sends nothing, or a
byte now and then, holds it forever. :func:`run_server` passes explicit limits:

- ``limit_concurrency``: at most ``max_connections`` connections are served at once; a request
  on one more gets a plain-text 503 from uvicorn (the app's own 503, JSON with Retry-After, is
  for a full inference queue and comes well before).
- a deadline for each request's headers (:class:`HeaderTimeoutH11Protocol`), from the moment a
  connection opens or its previous answer is sent; the body's deadline is the app's
  (:mod:`lungseg.serve.body_limit`, 408).
- ``timeout_keep_alive``, ``h11_max_incomplete_event_size`` and ``timeout_graceful_shutdown``:
  uvicorn's defaults for the idle time of a kept-alive connection and the bytes of headers
  buffered (400 above), and a bound on how long Ctrl+C waits for requests in flight, all stated
  in :mod:`lungseg.serve.settings`.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from lungseg.serve.settings import (
    GRACEFUL_SHUTDOWN_S,
    KEEP_ALIVE_S,
    MAX_HEADER_BYTES,
    ServeSettings,
)


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request headers come too slowly.

    The deadline starts when the connection opens and again when each answer has been sent; if
    the client has not completed a request's headers by then, the connection is closed (there is
    no request yet to answer). uvicorn's own keep-alive timer cannot do this: any byte received
    cancels it, so a client trickling header bytes would keep the connection for ever.

    Args:
        header_timeout_s: seconds a client has to send a request line and its headers.
        *args, **kwargs: uvicorn's protocol arguments.
    """

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._start_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_overdue)

    def _headers_overdue(self) -> None:
        self._header_timer = None
        # IDLE: no complete request since the timer started (h11 leaves IDLE on the headers).
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info(
                "closing a connection whose request headers took over %g s", self.header_timeout_s
            )
            self.transport.close()


def run_server(app: Any, settings: ServeSettings) -> None:
    """Serve ``app`` with uvicorn until Ctrl+C, with the limits above.

    Args:
        app: the ASGI app (:func:`lungseg.serve.create_app`, built from the same settings).
        settings: ``host`` and ``port`` (where to listen), ``read_timeout_s`` (the headers'
            deadline) and ``max_connections`` are used here; the app applies the rest.
    """
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        http=functools.partial(HeaderTimeoutH11Protocol, header_timeout_s=settings.read_timeout_s),
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        log_level="info",
    )
