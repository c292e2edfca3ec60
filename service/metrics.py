"""Prometheus text exposition without extra dependencies: request counts and latency
histograms kept in-process, queue depths and job outcomes read from Redis at scrape time."""

from __future__ import annotations

import threading
from collections import defaultdict

#: Latency histogram bucket upper bounds, seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RequestMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str, int], int] = defaultdict(int)
        self.hist: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.sums: dict[tuple[str, str], float] = defaultdict(float)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.counts[(method, route, status)] += 1
            buckets = self.hist[(method, route)]
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            buckets[-1] += 1
            self.sums[(method, route)] += seconds

    def render(self) -> list[str]:
        lines = [
            "# HELP instyle_http_requests_total HTTP requests by method, route and status.",
            "# TYPE instyle_http_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), n in sorted(self.counts.items()):
                lines.append(f'instyle_http_requests_total{{method="{method}",route="{route}",status="{status}"}} {n}')
            lines += [
                "# HELP instyle_http_request_duration_seconds HTTP request latency.",
                "# TYPE instyle_http_request_duration_seconds histogram",
            ]
            for (method, route), buckets in sorted(self.hist.items()):
                labels = f'method="{method}",route="{route}"'
                for bound, n in zip(BUCKETS, buckets, strict=False):
                    lines.append(f'instyle_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {n}')
                lines.append(f'instyle_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {buckets[-1]}')
                lines.append(f"instyle_http_request_duration_seconds_sum{{{labels}}} {self.sums[(method, route)]:.6f}")
                lines.append(f"instyle_http_request_duration_seconds_count{{{labels}}} {buckets[-1]}")
        return lines
