"""API keys for the writing endpoints (``INSTYLE_API_KEYS``), compared in constant time.

Checked twice: by ``KeyBeforeBody`` from the request's headers before any of its body is read
(FastAPI parses a form before a route's dependencies run: an anonymous client could make the
server take in and parse up to ``INSTYLE_MAX_UPLOAD_BYTES`` a request), and by each writing
route's ``ApiKey`` dependency, which documents it in the OpenAPI schema.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import Depends, Header
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from service.deps import State
from service.exceptions import Forbidden, ServiceError, Unauthorized
from service.problems import leaf_routes, service_error_response


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
    """Answers a writing route's 401/403 from the headers alone, before its body is read. The
    routes are those that depend on ``require_api_key`` (found once, in the app's routes)."""

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self.app = app
        self.keys = list(keys)
        self._guarded: list[APIRoute] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.keys and scope["type"] == "http" and self._needs_key(scope):
            headers = dict(scope.get("headers") or [])
            value = headers.get(b"authorization")
            try:
                check_api_key(self.keys, value.decode("latin-1") if value is not None else None)
            except ServiceError as exc:
                await service_error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _needs_key(self, scope: Scope) -> bool:
        if self._guarded is None:
            routes = leaf_routes(scope["app"].router.routes)
            self._guarded = [r for r in routes if isinstance(r, APIRoute) and _calls(r.dependant, require_api_key)]
        return any(route.matches(scope)[0] == Match.FULL for route in self._guarded)


def _calls(dependant: Dependant, function: Callable[..., object]) -> bool:
    """Whether ``dependant`` (a route's, or one of its dependencies') calls ``function``."""
    return any(d.call is function or _calls(d, function) for d in dependant.dependencies)
