"""Shared pieces of the per-process settings classes (service, worker). Torch-free."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator
from pydantic_settings import NoDecode


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


#: A list given in the environment as ``a,b,c``.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]

#: Embedded mode's Redis (``instyle.embedded_redis``): a private redis-server child, the
#: in-process fake, or the first when redis-server is installed.
EmbeddedRedisMode = Literal["auto", "server", "memory"]
