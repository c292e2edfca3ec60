"""The API's request metrics: counted in memory on each request, added to Redis in batches
(``instyle.telemetry``'s layout), so that ``/metrics`` of any API process shows the requests of
all of them (``UVICORN_WORKERS`` processes behind one port); queue depths and job outcomes are
read from Redis at scrape time (``service.routes.health``)."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from redis import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instyle import telemetry

log = logging.getLogger(__name__)

#: Seconds between a process's additions to Redis (and so the most another process's scrape lags).
FLUSH_S = 1.0

Tally = dict[str, dict[str, float]]  # metric name -> field of its Redis hash -> amount


def _add(into: Tally, amounts: Tally) -> None:
    for name, fields in amounts.items():
        target = into[name]
        for field, amount in fields.items():
            target[field] = target.get(field, 0) + amount


class RequestMetrics:
    """HTTP metrics: requests by method, route and status, their latency by the same, upload
    sizes by route. ``observe`` counts a request in memory twice over: in this process's
    totals (``render_local``: what ``/metrics`` shows while Redis is down) and in what is not in
    Redis yet, which ``flush`` adds there in one transaction (from ``start_flushing``'s thread
    every ``FLUSH_S``, and before each scrape) and keeps should Redis refuse it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: Tally = defaultdict(dict)
        self._pending: Tally = defaultdict(dict)

    def observe(self, method: str, route: str, status: int, seconds: float, upload_bytes: int | None = None) -> None:
        request = telemetry.labels_text({"method": method, "route": route, "status": str(status)})
        amounts: Tally = {
            "instyle_http_requests_total": {request: 1},
            "instyle_http_request_duration_seconds": dict(
                telemetry.histogram_fields(telemetry.METRICS["instyle_http_request_duration_seconds"], request, seconds)
            ),
        }
        if upload_bytes is not None:
            metric = telemetry.METRICS["instyle_upload_bytes"]
            amounts[metric.name] = dict(
                telemetry.histogram_fields(metric, telemetry.labels_text({"route": route}), upload_bytes)
            )
        with self._lock:
            _add(self._totals, amounts)
            _add(self._pending, amounts)

    def flush(self, redis: Redis) -> None:
        """Add what was counted since the last flush to Redis (raises ``RedisError``; the
        counts are then kept for the next one)."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(dict)
        if not pending:
            return
        try:
            pipe = redis.pipeline(transaction=True)  # all or nothing: a retry never counts twice
            for name, fields in pending.items():
                telemetry.add_fields(pipe, name, fields)
            pipe.execute()
        except BaseException:
            with self._lock:
                _add(self._pending, pending)
            raise

    def start_flushing(self, redis: Redis, every_s: float = FLUSH_S) -> Callable[[], None]:
        """Flush every ``every_s`` from a daemon thread; returns the function that stops it
        (after a last flush, when Redis takes it)."""
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(every_s):
                try:
                    self.flush(redis)
                except RedisError as exc:
                    log.debug("request metrics kept for later, Redis refused them: %s", exc)

        thread = threading.Thread(target=run, name="instyle-metrics-flush", daemon=True)
        thread.start()

        def stop_flushing() -> None:
            stop.set()
            thread.join(timeout=every_s + 5)
            try:
                self.flush(redis)
            except RedisError as exc:
                log.warning("request metrics since the last flush were not added to Redis: %s", exc)

        return stop_flushing

    def render_local(self) -> list[str]:
        """This process's own totals, as ``telemetry.render`` would show them from Redis."""
        with self._lock:
            totals = {name: dict(fields) for name, fields in self._totals.items()}
        return [
            line
            for name in telemetry.API_METRICS
            for line in telemetry.render_metric(telemetry.METRICS[name], totals.get(name, {}))
        ]


class ObserveRequests:
    """ASGI middleware feeding ``RequestMetrics``: each HTTP request's route template, status,
    duration and (for POSTs) declared upload size.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs
    the rest of the app in a task group and streams its response back through a memory channel,
    extra work on every request for a middleware that only needs to watch."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before it answers

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = scope.get("route")  # set by the router on the scope it was given: this one
            method = scope["method"]
            length = dict(scope.get("headers") or []).get(b"content-length", b"")
            upload = int(length) if method == "POST" and length.isdigit() else None
            self.metrics.observe(
                method, getattr(route, "path", "unmatched"), status, time.perf_counter() - start, upload
            )
