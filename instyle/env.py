"""Shared pieces of the per-process settings classes (service, worker). Torch-free."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator
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


def _redis_url(value: str | None) -> str | None:
    """Refuse a URL redis-py would refuse only when first used (a traceback at start)."""
    if value is None:
        return value
    from redis.connection import parse_url

    try:
        parse_url(value)
    except ValueError as exc:
        raise ValueError(f"not a Redis URL ({exc})") from None
    return value


#: ``INSTYLE_REDIS_URL``: ``redis://``, ``rediss://`` or ``unix://``, checked when settings load.
RedisUrl = Annotated[str | None, AfterValidator(_redis_url)]
