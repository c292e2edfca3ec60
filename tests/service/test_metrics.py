"""The API's request metrics are shared through Redis: a scrape of any API process counts the
requests of every one (``UVICORN_WORKERS`` processes behind one port), and none are lost while
Redis is away."""

from __future__ import annotations

import time

import fakeredis
import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from instyle import telemetry
from service.metrics import RequestMetrics
from tests.service.conftest import MakeClient

REQUESTS = 'instyle_http_requests_total{method="GET",route="/healthz",status="200"}'


def series(text: str) -> dict[str, str]:
    return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.splitlines() if not line.startswith("#")}


def test_a_scrape_of_one_api_process_counts_every_process_requests(make_client: MakeClient) -> None:
    first, second = make_client(), make_client()  # two API processes on one Redis, as uvicorn's workers
    for _ in range(3):
        assert first.get("/healthz").status_code == 200
    for _ in range(2):
        assert second.get("/healthz").status_code == 200
    # the scraped process adds its own at once; the other within its flush period (1 s)
    deadline, scrapes = time.monotonic() + 10, 1
    while (scraped := series(first.get("/metrics").text)).get(REQUESTS) != "5" and time.monotonic() < deadline:
        time.sleep(0.2)
        scrapes += 1
    assert scraped[REQUESTS] == "5"
    labels = 'method="GET",route="/healthz",status="200"'
    assert scraped[f"instyle_http_request_duration_seconds_count{{{labels}}}"] == "5"
    assert scraped[f'instyle_http_request_duration_seconds_bucket{{{labels},le="30.0"}}'] == "5"
    again = series(second.get("/metrics").text)  # the other process renders the same totals
    assert again[REQUESTS] == "5"
    # each of the first process's scrapes counted once (its last one within its flush period)
    shown = int(again['instyle_http_requests_total{method="GET",route="/metrics",status="200"}'])
    assert scrapes - 1 <= shown <= scrapes


def test_counts_refused_by_redis_are_kept_for_the_next_flush() -> None:
    metrics = RequestMetrics()
    metrics.observe("POST", "/v1/stylize", 202, 0.02, upload_bytes=70_000)
    metrics.observe("POST", "/v1/stylize", 202, 40.0, upload_bytes=70_000)
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    with pytest.raises(RedisConnectionError):
        metrics.flush(dead)
    metrics.observe("GET", "/healthz", 200, 0.001)
    redis = fakeredis.FakeRedis()
    metrics.flush(redis)
    metrics.flush(redis)  # nothing new: adds nothing
    shown = series("\n".join(telemetry.render(redis)))
    post = 'method="POST",route="/v1/stylize",status="202"'
    assert shown[f"instyle_http_requests_total{{{post}}}"] == "2"
    assert shown[f'instyle_http_request_duration_seconds_bucket{{{post},le="0.025"}}'] == "1"
    assert shown[f'instyle_http_request_duration_seconds_bucket{{{post},le="30.0"}}'] == "1"  # 40 s: above it
    assert shown[f'instyle_http_request_duration_seconds_bucket{{{post},le="+Inf"}}'] == "2"
    assert abs(float(shown[f"instyle_http_request_duration_seconds_sum{{{post}}}"]) - 40.02) < 1e-6
    assert shown['instyle_upload_bytes_bucket{route="/v1/stylize",le="262144"}'] == "2"
    assert shown['instyle_http_requests_total{method="GET",route="/healthz",status="200"}'] == "1"
    # this process's own totals, rendered the same way (what /metrics shows while Redis is down)
    local = series("\n".join(metrics.render_local()))
    assert {k: v for k, v in shown.items() if k.startswith(("instyle_http_", "instyle_upload_"))} == local


def test_the_flushing_thread_adds_counts_without_a_scrape_and_once_more_when_stopped() -> None:
    metrics = RequestMetrics()
    redis = fakeredis.FakeRedis()
    stop = metrics.start_flushing(redis, every_s=0.05)
    metrics.observe("GET", "/healthz", 200, 0.001)
    key = telemetry.PREFIX + "instyle_http_requests_total"
    deadline = time.monotonic() + 5
    while not redis.hgetall(key) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert redis.hgetall(key) == {b'method="GET",route="/healthz",status="200"': b"1"}
    metrics.observe("GET", "/healthz", 200, 0.001)
    stop()
    assert redis.hgetall(key) == {b'method="GET",route="/healthz",status="200"': b"2"}
