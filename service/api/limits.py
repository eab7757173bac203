"""The upload size limit, enforced on the bytes that actually arrive.

A ``Content-Length`` header can be absent (chunked transfer encoding) or
wrong, so the limit is counted on the request body as the server receives
it: the request that passes ``max_bytes`` is answered 413 at that point, and
what was read so far is dropped.  A declared ``Content-Length`` above the
limit is refused before the first body byte is read.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    """Pure ASGI middleware: 413 once a request body passes ``max_bytes``.

    The 413 is raised from ``receive`` inside the application, so that the
    route's exception handling (and the audit log) see it like any HTTP error;
    should the application not turn it into a response, this middleware does.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(413, detail=f"upload larger than {self.max_bytes / 2**20:g} MB")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        too_long = declared.isdigit() and int(declared) > self.max_bytes
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            if too_long:
                raise self._too_large()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except HTTPException as e:
            if started or e.status_code != 413:
                raise
            await JSONResponse({"detail": e.detail}, status_code=413)(scope, receive, send)
