"""API keys for the writing endpoints (``INSTYLE_API_KEYS``), compared in constant time.

Checked twice: by ``KeyBeforeBody`` from the request's headers before any of its body is read
(FastAPI parses a form before a route's dependencies run: an anonymous client could make the
server take in and parse up to ``INSTYLE_MAX_UPLOAD_BYTES`` a request), and by each writing
route's ``ApiKey`` dependency, which documents it in the OpenAPI schema.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, Header
from starlette.types import ASGIApp, Receive, Scope, Send

from service.deps import State
from service.exceptions import Forbidden, ServiceError, Unauthorized
from service.problems import service_error_response

#: (method, path) of the routes that need a key: training a style, deleting one.
WRITING_ROUTES = (("POST", re.compile(r"/v1/styles/?")), ("DELETE", re.compile(r"/v1/styles/[^/]+/?")))


def check_api_key(keys: Sequence[str], authorization: str | None) -> None:
    """``Unauthorized`` without a bearer key, ``Forbidden`` with a wrong one; nothing to check
    when no keys are set."""
    if not keys:
        return
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("send 'Authorization: Bearer <key>' to use this endpoint")
    given = authorization[7:].strip().encode()
    matches = [hmac.compare_digest(given, key.encode()) for key in keys]  # no early exit
    if not any(matches):
        raise Forbidden("the API key is not valid")


def require_api_key(state: State, authorization: Annotated[str | None, Header()] = None) -> None:
    check_api_key(state.settings.api_keys, authorization)


ApiKey = Annotated[None, Depends(require_api_key)]


class KeyBeforeBody:
    """Answers a writing route's 401/403 from the headers alone, before its body is read."""

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self.app = app
        self.keys = list(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.keys and scope["type"] == "http" and _writes(scope["method"], scope["path"]):
            headers = dict(scope.get("headers") or [])
            value = headers.get(b"authorization")
            try:
                check_api_key(self.keys, value.decode("latin-1") if value is not None else None)
            except ServiceError as exc:
                await service_error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _writes(method: str, path: str) -> bool:
    return any(method == m and pattern.fullmatch(path) for m, pattern in WRITING_ROUTES)
