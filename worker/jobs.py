"""RQ job functions, enqueued by dotted path (``instyle.protocol``) with JSON payloads.

A job that fails records ``{code, message}`` in its meta before raising, so the API can say
why; the worker itself always carries on.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import get_current_job
from rq.job import Job

from instyle import telemetry
from instyle.protocol import CANCEL_PREFIX, CONTENT_TYPES, RESULT_PREFIX, ErrorCode, StylizePayload, StylizeResult
from model_store.exceptions import ArtifactCorrupt, StoreError, StyleNotFound
from stylenet.config import release_openmp_pool
from stylenet.exceptions import InvalidImage
from stylenet.imageio import encode_pixels, load_pixels
from stylenet.inference import runs_exclusive, stylize_pixels
from worker.context import WorkerContext, current_context
from worker.runner import all_threads, shared_lease

log = logging.getLogger(__name__)


class JobFailure(Exception):
    """A job failure with a stable code (recorded in the job's meta)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


def _set_progress(pipe: Pipeline, progress: float, **extra: Any) -> None:
    """Record the current job's progress (and ``extra`` fields) in its meta: queued on ``pipe``
    for the caller to execute with its other commands."""
    job = get_current_job()
    if job is not None:
        _queue_meta(pipe, job, progress=progress, **extra)


def _queue_meta(pipe: Pipeline, job: Job, **fields: Any) -> None:
    job.meta.update(fields)
    pipe.hset(job.key, "meta", job.serializer.dumps(job.meta))


#: Seconds between two reports of a tiled pass's progress; each also looks for a cancel request.
PASS_REPORT_EVERY_S = 1.0
#: The job's progress while its generator pass runs goes from the first to the second.
PASS_SPAN = (0.2, 0.9)


def pass_reporter(redis: Redis, job: Job | None) -> Callable[[float], None] | None:
    """For a tiled pass (``stylenet.tiling``, up to minutes for a large photo on a CPU): a
    callback that records how far it got in ``job``'s progress, and stops the pass with a
    ``canceled`` failure once the API has asked the job to stop (``DELETE /v1/jobs/{id}``),
    at most every ``PASS_REPORT_EVERY_S``. A Redis hiccup skips a report, never the pass."""
    if job is None:
        return None
    last = time.monotonic()
    low, high = PASS_SPAN

    def report(done: float) -> None:
        nonlocal last
        at = time.monotonic()
        if at - last < PASS_REPORT_EVERY_S:
            return
        last = at
        pipe = redis.pipeline(transaction=False)
        _queue_meta(pipe, job, progress=round(low + (high - low) * done, 3))
        canceled = _queue_cancel_check(pipe, job)
        try:
            replies = pipe.execute()
        except RedisError:
            log.warning("could not report the progress of job %s", job.id, exc_info=True)
            return
        _raise_if_canceled(replies, canceled)

    return report


#: Failures that would fail again on any worker: a job that ends with one is not retried, even
#: with retries left (``Retry`` is there for workers lost mid-job). ``train_data_missing`` is
#: not among them: another train worker may have the photos this one lacks.
FINAL_CODES = frozenset(
    {ErrorCode.invalid_image, ErrorCode.invalid_recipe, ErrorCode.input_expired, ErrorCode.canceled}
)


def fail_job(code: ErrorCode, message: str) -> JobFailure:
    job = get_current_job()
    if job is not None:
        job.meta["error"] = {"code": code.value, "message": message}
        job.save_meta()
        if code in FINAL_CODES:
            job.retries_left = None  # the worker's own instance: RQ reads it when the job fails
    return JobFailure(code, message)


def _connection(ctx: WorkerContext) -> Redis:
    job = get_current_job()
    return job.connection if job is not None else ctx.redis


class Recorded:
    """A job's duration, sent when it ends (``recorded``) unless the job queued it on a
    pipeline of its own first (``queue_finished``)."""

    def __init__(self, job_type: str) -> None:
        self.job_type = job_type
        self.start = time.perf_counter()
        self.sent = False

    def queue(self, redis: Redis, status: str) -> None:
        labels = {"type": self.job_type, "status": status}
        telemetry.observe(redis, "instyle_job_duration_seconds", labels, time.perf_counter() - self.start)
        self.sent = True

    def queue_finished(self, pipe: Pipeline) -> None:
        """Queue the job's duration as finished on ``pipe``, the job's last commands: one
        round trip less per job than sending it after. (Should storing the result in that same
        pipeline fail, the job fails but the metric has counted it finished.)"""
        self.queue(pipe, "finished")


@contextmanager
def recorded(job_type: str) -> Iterator[Recorded]:
    """Count the job's final status and time it (``instyle.telemetry``), whatever happens."""
    record = Recorded(job_type)
    status = "failed"
    try:
        yield record
        status = "finished"
    except JobFailure as exc:
        status = "canceled" if exc.code == ErrorCode.canceled else "failed"
        raise
    finally:
        job = get_current_job()
        if job is not None and not record.sent:
            record.queue(job.connection, status)


def stylize(payload: dict[str, Any]) -> dict[str, Any]:
    """Stylize the photo at ``payload.input_key``; store the encoded result under a new key."""
    with shared_lease(), recorded("stylize") as record:
        return _stylize(payload, record)


def _stylize(payload: dict[str, Any], record: Recorded) -> dict[str, Any]:
    # Three Redis round trips in all (three pipelines, which also carry the cache lookups and
    # the job's duration), plus one a second during a tiled pass: each costs the worker ~0.1 ms
    # of CPU, paid on every image.
    ctx = current_context()
    p = StylizePayload.model_validate(payload)
    redis = _connection(ctx)
    job = get_current_job()
    ahead = ctx.prefetched.pop(job.id, None) if job is not None else None
    try:
        generator, resolved = ctx.cache.get(p.style)
    except StyleNotFound as exc:
        raise fail_job(ErrorCode.style_not_found, str(exc)) from None
    except ArtifactCorrupt as exc:
        raise fail_job(ErrorCode.artifact_corrupt, str(exc)) from None
    except StoreError as exc:
        raise fail_job(ErrorCode.internal, str(exc)) from None
    pipe = redis.pipeline(transaction=False)
    _set_progress(pipe, 0.2, style_resolved=resolved.manifest.ref)
    canceled = _queue_cancel_check(pipe, job)
    if ahead is None:
        pipe.get(p.input_key)
    replies = pipe.execute()
    _raise_if_canceled(replies, canceled)
    if ahead is not None:  # stylized in a batch with other waiting jobs (worker.batching)
        out, model_s = ahead.pixels, ahead.model_s
        progress: dict[str, Any] = {"model_ms": round(model_s * 1000, 2), "batch": ahead.batch}
    else:
        data = replies[-1]
        if data is None:
            raise fail_job(ErrorCode.input_expired, "the uploaded photo expired before a worker picked the job up")
        try:
            # pixels only: the decoded image is gone before the pass (268 MB at 8192²)
            photo = load_pixels(data.encode() if isinstance(data, str) else data, p.max_size)
        except InvalidImage as exc:
            raise fail_job(ErrorCode.invalid_image, str(exc)) from None
        del data, replies
        timings: dict[str, float] = {}
        with all_threads() if runs_exclusive(photo.shape[0] * photo.shape[1]) else contextlib.nullcontext():
            report = pass_reporter(redis, job)
            out = stylize_pixels(
                generator, photo[None], [p.preserve_color], ctx.device, ctx.tile_pixels, timings, report
            )[0]
        del photo
        # What is left (encoding, Redis, RQ's bookkeeping) runs no torch kernel; an OpenMP pool
        # kept until the job ends spins beside it on a core the other threads want (with a null
        # generator, 21.0 -> 19.5-20.8 ms of server CPU per image; docs/performance.md). The
        # next job starts a new one.
        release_openmp_pool()
        model_s = timings["model_s"]
        progress = {"model_ms": round(model_s * 1000, 2)}
    pipe = redis.pipeline(transaction=False)
    _set_progress(pipe, 0.9, **progress)
    height, width = out.shape[:2]
    labels = {"style": resolved.manifest.ref, "size": telemetry.size_class(width, height)}
    telemetry.observe(pipe, "instyle_inference_seconds", labels, model_s)
    ctx.send_lookups(pipe)
    canceled = _queue_cancel_check(pipe, job)
    _raise_if_canceled(pipe.execute(raise_on_error=False), canceled)  # a metric may fail, not the job
    encoded = encode_pixels(out, p.format, p.quality)
    result_key = f"{RESULT_PREFIX}{job.id if job is not None else p.input_key.rsplit(':', 1)[-1]}"
    pipe = redis.pipeline(transaction=False)
    pipe.set(result_key, encoded, ex=p.result_ttl_s)
    pipe.delete(p.input_key)
    record.queue_finished(pipe)
    stored = pipe.execute(raise_on_error=False)  # a metric may fail, not the job
    for reply in stored[:2]:
        if isinstance(reply, Exception):
            raise reply
    result = StylizeResult(
        result_key=result_key,
        content_type=CONTENT_TYPES[p.format],
        width=width,
        height=height,
        style=resolved.manifest.ref,
        model_ms=round(model_s * 1000, 2),
    )
    return result.model_dump()


def _queue_cancel_check(pipe: Pipeline, job: Job | None) -> int | None:
    """Queue on ``pipe`` the lookup of the key by which the API asks ``job`` to stop
    (``instyle.protocol.CANCEL_PREFIX``); the index of its reply (None: no job)."""
    if job is None:
        return None
    pipe.exists(f"{CANCEL_PREFIX}{job.id}")
    return len(pipe) - 1


def _raise_if_canceled(replies: list[Any], index: int | None) -> None:
    if index is None:
        return
    if isinstance(replies[index], Exception):
        raise replies[index]
    if replies[index]:
        raise fail_job(ErrorCode.canceled, "the job was canceled")
