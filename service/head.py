"""ASGI middleware that answers HEAD on every GET route (FastAPI routes only the methods a route
names): uptime checks and load balancers probe with HEAD, and RFC 9110 section 9.3.2 has every
server that answers GET answer HEAD too."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    """A HEAD request runs as the GET it stands for; its status and headers (``Content-Length``
    included) go out, its body does not. The server still sees a HEAD (its own scope is not
    changed), and the route the router found is copied back for the middlewares around this one
    (``ObserveRequests`` labels the request with it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        inner = {**scope, "method": "GET"}
        ended = False

        async def headers_only(message: Message) -> None:
            nonlocal ended
            if message["type"] == "http.response.body":
                if ended or message.get("more_body", False):
                    return
                ended = True
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        try:
            await self.app(inner, receive, headers_only)
        finally:
            if "route" in inner:
                scope["route"] = inner["route"]
