"""Worker settings (``INSTYLE_`` environment variables), validated at start."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from instyle.env import CommaList


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INSTYLE_", extra="ignore")

    redis_url: str | None = None
    store: Path | None = None
    #: Queues ``instyle worker`` serves when ``--queues`` is not given (comma-separated).
    queues: CommaList = Field(default_factory=lambda: ["stylize"])
    #: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    #: Generators kept in memory (LRU).
    cache_size: int = Field(default=8, ge=1)
    #: Styles loaded before the worker takes its first job (comma-separated ids).
    warm_styles: CommaList = Field(default_factory=list)
    #: Folder of content photos for training jobs (never uploaded per job).
    train_data: Path | None = None
    #: Seconds a training job's lease lasts without a heartbeat before it counts as abandoned.
    train_lease_s: int = Field(default=120, ge=1)
    #: Seconds between the worker's registry maintenance (retries abandoned jobs).
    maintenance_s: int = Field(default=60, ge=1)
