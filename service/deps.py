"""FastAPI dependencies: the per-process state built in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis import Redis

from model_store.catalog import Catalog
from service.jobs import JobService
from service.metrics import RequestMetrics
from service.settings import ServiceSettings


@dataclass
class AppState:
    settings: ServiceSettings
    redis: Redis
    catalog: Catalog
    jobs: JobService
    metrics: RequestMetrics


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.instyle
    return state


State = Annotated[AppState, Depends(get_state)]
