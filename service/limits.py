"""ASGI middleware that caps request bodies while they stream in (before multipart parsing)."""

from __future__ import annotations

import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.exceptions import UploadTooLarge
from service.problems import problem


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """Answers 413 problem+json as soon as a request body exceeds ``max_bytes``.

    A ``Content-Length`` over the cap is refused before reading; a chunked or lying body is
    cut off when the running count passes the cap, so the upload is never held in full.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        seen = 0
        exceeded = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app answers after the cut-off (e.g. a 400 for the broken form) is
            # replaced by the 413 below.
            if not exceeded:
                await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, counting_receive, guarded_send)
        if exceeded:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        mb = self.max_bytes / (1024 * 1024)
        error = UploadTooLarge(f"the request body exceeds the {mb:g} MB limit")
        await problem(error.status, error.code, error.title, error.detail)(scope, receive, send)
