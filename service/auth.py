"""API keys for the writing endpoints (``INSTYLE_API_KEYS``), compared in constant time."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header

from service.deps import State
from service.exceptions import Forbidden, Unauthorized


def require_api_key(state: State, authorization: Annotated[str | None, Header()] = None) -> None:
    keys = state.settings.api_keys
    if not keys:
        return
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("send 'Authorization: Bearer <key>' to use this endpoint")
    given = authorization[7:].strip().encode()
    matches = [hmac.compare_digest(given, key.encode()) for key in keys]  # no early exit
    if not any(matches):
        raise Forbidden("the API key is not valid")


ApiKey = Annotated[None, Depends(require_api_key)]
