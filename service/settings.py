"""API settings (``INSTYLE_`` environment variables), validated at start."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from instyle.env import CommaList, EmbeddedRedisMode, RedisUrl


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INSTYLE_", extra="ignore")

    #: Redis URL; unset = embedded mode (workers started by the API process: ``instyle serve``).
    redis_url: RedisUrl = None
    #: Embedded mode's Redis (``instyle.embedded_redis``): ``server``, a private redis-server
    #: child on a Unix socket; ``memory``, the in-process fakeredis; ``auto``, server when
    #: redis-server is installed, else memory.
    embedded_redis: EmbeddedRedisMode = "auto"
    #: Writable style store (shipped styles are always listed too).
    store: Path | None = None
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    #: Largest accepted photo (8192 x 8192): workers tile large images with exact instance-norm
    #: statistics (``stylenet.tiling``), so memory stays bounded by the 1/4-resolution features.
    max_pixels: int = Field(default=8192 * 8192, ge=1)
    default_max_size: int = Field(default=1024, ge=16)
    max_size_cap: int = Field(default=8192, ge=16)
    #: Seconds an uploaded photo / a result is kept in Redis.
    input_ttl_s: int = Field(default=900, ge=1)
    result_ttl_s: int = Field(default=3600, ge=1)
    #: Seconds a stylize job may run before it is failed: this much, plus
    #: ``stylize_timeout_s_per_megapixel`` for each megapixel of its output. A tiled 8192²
    #: image (67 MP) took 64 s on a Zen 5 core pair in bf16 and would take ~6 min in float32 on
    #: an AVX2-only CPU (92 s at 4096²; docs/performance.md): 120 + 10 x 67 s leaves room for both.
    stylize_timeout_s: int = Field(default=120, ge=1)
    stylize_timeout_s_per_megapixel: float = Field(default=10.0, ge=0)
    #: Queued jobs beyond which POST /v1/stylize answers 429.
    max_queue_depth: int = Field(default=100, ge=1)
    #: Upper bound of ``?wait=`` in seconds.
    max_wait_s: float = Field(default=30.0, ge=0)
    #: API keys for the writing endpoints (comma-separated); empty = no authentication.
    api_keys: CommaList = Field(default_factory=list, repr=False)
    #: Seconds a training job may run; attempts after a worker dies; style image retention.
    train_timeout_s: int = Field(default=7 * 24 * 3600, ge=1)
    train_retries: int = Field(default=2, ge=0)
    style_image_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    max_train_queue_depth: int = Field(default=20, ge=1)
