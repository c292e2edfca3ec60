"""API settings (``INSTYLE_`` environment variables), validated at start."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INSTYLE_", extra="ignore")

    #: Redis URL; unset = embedded mode (in-process Redis and worker thread).
    redis_url: str | None = None
    #: Writable style store (shipped styles are always listed too).
    store: Path | None = None
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(default=40_000_000, ge=1)
    default_max_size: int = Field(default=1024, ge=16)
    max_size_cap: int = Field(default=4096, ge=16)
    #: Seconds an uploaded photo / a result is kept in Redis.
    input_ttl_s: int = Field(default=900, ge=1)
    result_ttl_s: int = Field(default=3600, ge=1)
    #: Seconds a stylize job may run before it is failed.
    stylize_timeout_s: int = Field(default=120, ge=1)
    #: Queued jobs beyond which POST /v1/stylize answers 429.
    max_queue_depth: int = Field(default=100, ge=1)
    #: Upper bound of ``?wait=`` in seconds.
    max_wait_s: float = Field(default=30.0, ge=0)
