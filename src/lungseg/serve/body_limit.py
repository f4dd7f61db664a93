"""Refuse request bodies over a size limit while they stream in, with a JSON 413.

A declared ``Content-Length`` over the limit is refused before a byte of the body is read; a
body without one (chunked) is counted as it arrives and refused the moment it passes the limit,
so an oversize upload never sits whole in memory or in a spool file.

FastAPI's own ``max_body_size`` does the counting too, but answers a Content-Length refusal in
plain text; this middleware keeps every error of the API in the same JSON shape
(``{"detail": message}``) with a message that names the limit.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyTooLarge(HTTPException):
    """Raised from ``receive`` to abandon the request.

    An HTTPException, because FastAPI turns any other exception raised while it parses a body
    into a 400; this one passes through to the app's HTTP error handler as a 413.
    """

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


class BodyLimitMiddleware:
    """ASGI middleware: HTTP request bodies larger than ``max_body_bytes`` get a 413.

    Args:
        app: the wrapped ASGI app.
        max_body_bytes: the largest body accepted, in bytes (multipart framing included).
        describe_limit: the limit in words for the error message, e.g. ``"64 MiB"``.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, describe_limit: str) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.message = f"upload too large: the limit is {describe_limit}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(scope, receive, send)
            return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge(self.message)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except _BodyTooLarge:
            if response_started:  # the app answered without reading everything: let it be
                return
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Connection: close, because the rest of the body is never read off the socket.
        response = JSONResponse(
            {"detail": self.message}, status_code=413, headers={"Connection": "close"}
        )
        await response(scope, receive, send)
