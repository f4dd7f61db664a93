"""Refuse request bodies over a size limit (413) or too slow to arrive (408), with JSON answers.

A declared ``Content-Length`` over the limit is refused before a byte of the body is read; a
body without one (chunked) is counted as it arrives and refused the moment it passes the limit,
so an oversize upload never sits whole in memory or in a spool file.

The whole body must arrive within a deadline that starts when the headers are complete: a client
that sends its headers and then trickles the body, or stops, gets 408 instead of holding a
connection, a parser and its spool file forever. uvicorn has no such timeout of its own (its
``timeout_keep_alive`` only runs between requests); the deadline for the headers themselves is
:mod:`lungseg.serve.server`'s.

Any answer sent before the body was read to its end carries ``Connection: close``: the unread
rest is never read off the socket, and the connection is not left open reading and discarding
it (uvicorn would otherwise keep it, with no keep-alive timer, for as long as the client sends).

FastAPI's own ``max_body_size`` does the counting too, but answers a Content-Length refusal in
plain text; this middleware keeps every error of the API in the same JSON shape
(``{"detail": message}``) with a message that names the limit.
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyRefused(HTTPException):
    """Raised from ``receive`` to abandon the request (413 too large, 408 too slow).

    An HTTPException, because FastAPI turns any other exception raised while it parses a body
    into a 400; this one passes through to the app's HTTP error handler with its own status.
    """


class BodyLimitMiddleware:
    """ASGI middleware: HTTP request bodies over ``max_body_bytes`` get 413, too slow ones 408.

    Args:
        app: the wrapped ASGI app.
        max_body_bytes: the largest body accepted, in bytes (multipart framing included).
        describe_limit: the limit in words for the error message, e.g. ``"64 MiB"``.
        body_timeout_s: seconds the whole body may take to arrive, from the end of the headers.
    """

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, describe_limit: str, body_timeout_s: float
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.message = f"upload too large: the limit is {describe_limit}"
        self.timeout_message = (
            f"upload too slow: the request body must arrive within {body_timeout_s:g} s"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(scope, receive, send)
            return

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        received = 0
        # HTTP/1.1: a request with neither header has no body (RFC 9112, section 6.3).
        body_complete = declared in ("", "0") and "transfer-encoding" not in headers
        response_started = False

        async def guarded_receive() -> Message:
            nonlocal received, body_complete
            if body_complete:  # e.g. the wait for a disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise _BodyRefused(408, self.timeout_message) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyRefused(413, self.message)
                body_complete = not message.get("more_body", False)
            return message

        async def closing_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                if not body_complete:
                    MutableHeaders(scope=message)["Connection"] = "close"
            await send(message)

        try:
            await self.app(scope, guarded_receive, closing_send)
        except _BodyRefused as refused:
            if response_started:  # the app answered without reading everything: let it be
                return
            await self._refuse(scope, receive, send, refused.status_code, refused.detail)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int = 413,
        message: str | None = None,
    ) -> None:
        # Connection: close, because the rest of the body is never read off the socket.
        response = JSONResponse(
            {"detail": message or self.message},
            status_code=status,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
