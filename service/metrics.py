"""Prometheus text exposition without extra dependencies: request counts and latency
histograms kept in-process, queue depths and job outcomes read from Redis at scrape time."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instyle.telemetry import histogram_series

#: Latency histogram bucket upper bounds, seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Upload size histogram bucket upper bounds, bytes.
BYTE_BUCKETS = (16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216, 67_108_864)


class Histogram:
    """Cumulative buckets per label set (not thread-safe: ``RequestMetrics`` holds the lock)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(bounds) + 1))
        self.sums: dict[str, float] = defaultdict(float)

    def observe(self, labels: str, value: float) -> None:
        buckets = self.buckets[labels]
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                buckets[i] += 1
        buckets[-1] += 1
        self.sums[labels] += value

    def render(self, name: str, help_text: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for labels, buckets in sorted(self.buckets.items()):
            lines += histogram_series(name, labels, self.bounds, buckets[:-1], buckets[-1], self.sums[labels])
        return lines


class RequestMetrics:
    """Per-process HTTP metrics: requests by method/route/status, latency by the same, upload sizes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency = Histogram(BUCKETS)
        self.uploads = Histogram(BYTE_BUCKETS)

    def observe(self, method: str, route: str, status: int, seconds: float, upload_bytes: int | None = None) -> None:
        with self._lock:
            self.counts[(method, route, status)] += 1
            self.latency.observe(f'method="{method}",route="{route}",status="{status}"', seconds)
            if upload_bytes is not None:
                self.uploads.observe(f'route="{route}"', upload_bytes)

    def render(self) -> list[str]:
        lines = [
            "# HELP instyle_http_requests_total HTTP requests by method, route and status.",
            "# TYPE instyle_http_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), n in sorted(self.counts.items()):
                lines.append(f'instyle_http_requests_total{{method="{method}",route="{route}",status="{status}"}} {n}')
            lines += self.latency.render(
                "instyle_http_request_duration_seconds", "HTTP request latency by method, route and status."
            )
            lines += self.uploads.render("instyle_upload_bytes", "Request body sizes of uploads, by route.")
        return lines


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
