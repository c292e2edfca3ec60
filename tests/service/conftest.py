from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from instyle.protocol import QUEUES
from service.app import create_app
from service.settings import ServiceSettings
from worker.context import build_context
from worker.runner import make_worker
from worker.settings import WorkerSettings

MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(redis_url: str, tiny_store: Path) -> Iterator[MakeClient]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = ServiceSettings(redis_url=redis_url, store=tiny_store, **overrides)
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


@pytest.fixture
def run_worker(redis_url: str, tiny_store: Path) -> Callable[[], None]:
    """Runs a real (non-forking) worker in burst mode: processes what is queued, then returns."""
    redis = Redis.from_url(redis_url)
    build_context(WorkerSettings(redis_url=redis_url, store=tiny_store, device="cpu"), redis)

    def run() -> None:
        make_worker(redis, list(QUEUES)).work(burst=True, with_scheduler=False)

    return run
