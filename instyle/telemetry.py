"""Metrics pushed through Redis by workers and API processes, rendered by the API's ``/metrics``
(torch-free).

Workers come and go (GPU hosts behind NAT, ``--scale``) and the API may run as several uvicorn
processes, so instead of one scrape port per process they add to counters and histogram buckets
in Redis -- ``HINCRBY`` is atomic across processes -- and whichever API process is scraped
renders them all in Prometheus text format. Label values are bounded: job types, final
statuses, style refs, size classes, HTTP methods, route templates and status codes.

Recording never fails a job: a Redis error is logged at debug level and dropped. (The API's
request metrics are counted in memory and added to Redis in batches: ``service.metrics``.)
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

PREFIX = "instyle:telemetry:"
#: Seconds: from a cached 256-px stylization to a long training job.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0)
#: HTTP request latency bucket upper bounds, seconds.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Upload size bucket upper bounds, bytes.
BYTE_BUCKETS = (16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216, 67_108_864)
#: The metrics API processes record (``service.metrics``); the rest are the workers'.
API_METRICS = ("instyle_http_requests_total", "instyle_http_request_duration_seconds", "instyle_upload_bytes")
#: Long side (px) classes of the inference-time histogram.
SIZE_CLASSES = (256, 512, 1024, 2048, 4096, 8192)


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # "counter" or "histogram"
    help: str
    buckets: tuple[float, ...] = ()


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        # the API's, from every API process (service.metrics)
        Metric("instyle_http_requests_total", "counter", "HTTP requests by method, route and status."),
        Metric(
            "instyle_http_request_duration_seconds",
            "histogram",
            "HTTP request latency by method, route and status.",
            HTTP_BUCKETS,
        ),
        Metric("instyle_upload_bytes", "histogram", "Request body sizes of uploads, by route.", BYTE_BUCKETS),
        # the workers'
        # its _count is the number of jobs by type and final status
        Metric(
            "instyle_job_duration_seconds",
            "histogram",
            "Job run time on a worker, by type and final status (_count: jobs ended per status).",
            DURATION_BUCKETS,
        ),
        Metric(
            "instyle_job_attempts_lost_total",
            "counter",
            "Job attempts whose worker was lost (died, or its lease ran out), by type; retried or not.",
        ),
        Metric("instyle_model_cache_total", "counter", "Generator cache lookups by workers, by result (hit/miss)."),
        Metric("instyle_model_load_duration_seconds", "histogram", "Generator load time on workers.", DURATION_BUCKETS),
        Metric(
            "instyle_inference_seconds",
            "histogram",
            "Model time of a stylization, by style and output size class (long side, px).",
            DURATION_BUCKETS,
        ),
    )
}


def size_class(width: int, height: int) -> str:
    """The smallest class in ``SIZE_CLASSES`` that holds the long side (``"8192+"`` beyond)."""
    side = max(width, height)
    return next((str(c) for c in SIZE_CLASSES if side <= c), f"{SIZE_CLASSES[-1]}+")


def labels_text(labels: Mapping[str, str]) -> str:
    """Prometheus label text of ``labels`` (sorted by name, values escaped): a series' field in Redis."""

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return ",".join(f'{k}="{escape(str(v))}"' for k, v in sorted(labels.items()))


def incr(redis: Redis, name: str, labels: Mapping[str, str], amount: int = 1) -> None:
    metric = METRICS[name]
    assert metric.kind == "counter", name
    try:
        redis.hincrby(PREFIX + name, labels_text(labels), amount)
    except RedisError:
        log.debug("could not record %s", name, exc_info=True)


#: Seconds a lost attempt's mark lasts (``count_lost_job``): far beyond any cleanup race.
LOST_MARK_TTL_S = 3600


def count_lost_job(job: Any, exc_type: type[BaseException] | None, *_exc: Any) -> None:
    """An RQ exception handler: a job whose worker was lost (RQ's registry cleanup, in a worker
    or in the API, calls the handlers it is given with ``AbandonedJobError``) never reaches the
    worker's own ``recorded`` block, so count it here: the lost attempt, and, when no retry is
    left, the job's end in ``instyle_job_duration_seconds`` (status ``failed``; its time runs from
    the attempt's start until it was found lost). Other exceptions pass through untouched."""
    from rq.exceptions import AbandonedJobError  # rq is the API's and the workers' dependency

    if exc_type is None or not issubclass(exc_type, AbandonedJobError):
        return None
    try:  # a worker's maintenance and the API may both find the same lost attempt: count it once
        attempt = f"{PREFIX}lost:{job.id}:{job.started_at.timestamp() if job.started_at else ''}"
        if not job.connection.set(attempt, 1, nx=True, ex=LOST_MARK_TTL_S):
            return None
    except RedisError:
        log.debug("could not mark job %s's lost attempt", job.id, exc_info=True)
    job_type = str(job.meta.get("type", "stylize"))
    incr(job.connection, "instyle_job_attempts_lost_total", {"type": job_type})
    if job.retries_left and job.retries_left > 0:
        return None  # RQ queues it again: not its end
    started = job.started_at
    seconds = 0.0
    if started is not None:
        started = started if started.tzinfo is not None else started.replace(tzinfo=UTC)
        seconds = max(0.0, (datetime.now(UTC) - started).total_seconds())
    observe(job.connection, "instyle_job_duration_seconds", {"type": job_type, "status": "failed"}, seconds)
    return None


def clean_lost_jobs(queue: Any) -> bool:
    """Retry or fail ``queue``'s started jobs whose lease ran out (their worker died), each
    counted by ``count_lost_job``, under the queue's maintenance lock, the one RQ's workers take
    for their own cleanup: two cleaners at once could both take a lost attempt's expired entry
    and retry the job twice. False when another cleaner holds the lock (it sees them too)."""
    from rq.registry import StartedJobRegistry

    if not queue.acquire_maintenance_lock():
        return False
    try:
        StartedJobRegistry(queue=queue).cleanup(exception_handlers=[count_lost_job])
    finally:
        queue.release_maintenance_lock()
    return True


#: Field part of a histogram bucket in Redis: the count of values in (previous bound, bound].
#: Stored per bucket, not cumulatively, so an observation is one HINCRBY, not one per bound;
#: ``render`` sums them up. (Fields of the earlier cumulative layout, ``labels|bound``, are
#: ignored rather than misread.)
BUCKET = "in:"


def histogram_fields(metric: Metric, labels: str, value: float) -> list[tuple[str, float]]:
    """The fields of ``metric``'s hash that one observation of ``value`` adds to, and by how
    much: its bucket (none above the last bound), the count (``+Inf``) and the sum."""
    bound = next((b for b in metric.buckets if value <= b), None)
    fields: list[tuple[str, float]] = [] if bound is None else [(f"{labels}|{BUCKET}{bound}", 1)]
    return [*fields, (f"{labels}|+Inf", 1), (f"{labels}|sum", value)]


def add_fields(pipe: Pipeline, name: str, amounts: Mapping[str, float]) -> None:
    """Queue on ``pipe`` the additions of ``amounts`` to the fields of metric ``name``'s hash:
    ``HINCRBYFLOAT`` for a histogram's sums, ``HINCRBY`` for every count."""
    key = PREFIX + name
    for field, amount in amounts.items():
        if field.endswith("|sum"):
            pipe.hincrbyfloat(key, field, amount)
        else:
            pipe.hincrby(key, field, int(amount))


def observe(redis: Redis, name: str, labels: Mapping[str, str], value: float) -> None:
    """Add ``value`` to a histogram: its bucket, the count (``+Inf``) and the sum: 3 commands,
    sent in one round trip, or queued on ``redis`` when it is a pipeline (the caller sends them
    with its own commands)."""
    metric = METRICS[name]
    assert metric.kind == "histogram", name
    queued = isinstance(redis, Pipeline)
    try:
        pipe: Any = redis if queued else redis.pipeline(transaction=False)
        add_fields(pipe, name, dict(histogram_fields(metric, labels_text(labels), value)))
        if not queued:
            pipe.execute()
    except RedisError:
        log.debug("could not record %s", name, exc_info=True)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def histogram_series(
    name: str, labels: str, bounds: Sequence[float], counts: Sequence[int], count: int, total: float
) -> list[str]:
    """Prometheus text of one histogram series: cumulative ``counts`` per bound, +Inf, sum, count."""
    sep = "," if labels else ""
    lines = [f'{name}_bucket{{{labels}{sep}le="{bound}"}} {n}' for bound, n in zip(bounds, counts, strict=True)]
    lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {count}')
    lines.append(f"{name}_sum{{{labels}}} {total:.6f}")
    lines.append(f"{name}_count{{{labels}}} {count}")
    return lines


def render_metric(metric: Metric, stored: Mapping[str, str | float]) -> list[str]:
    """Prometheus text lines of ``metric`` from its hash's fields (``stored``, as in Redis)."""
    lines = [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {metric.kind}"]
    if metric.kind == "counter":
        for labels, value in sorted(stored.items()):
            lines.append(f"{metric.name}{{{labels}}} {int(float(value))}")
        return lines
    series: dict[str, dict[str, str | float]] = defaultdict(dict)
    for field, value in stored.items():
        labels, _, part = field.rpartition("|")
        series[labels][part] = value
    for labels, parts in sorted(series.items()):
        counts = list(accumulate(int(float(parts.get(f"{BUCKET}{bound}", 0))) for bound in metric.buckets))
        lines += histogram_series(
            metric.name, labels, metric.buckets, counts, int(float(parts.get("+Inf", 0))), float(parts.get("sum", 0))
        )
    return lines


def render(redis: Redis) -> list[str]:
    """Prometheus text lines for every metric in ``METRICS`` (raises ``RedisError``)."""
    lines: list[str] = []
    for metric in METRICS.values():
        stored = {_text(k): _text(v) for k, v in redis.hgetall(PREFIX + metric.name).items()}
        lines += render_metric(metric, stored)
    return lines
