"""Queueing and reading jobs through RQ (JSON serializer), images by reference in Redis."""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from redis import Redis
from rq import Queue, Retry
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, validate_job_id
from rq.job import JobStatus as RQStatus
from rq.registry import StartedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer

from instyle import telemetry
from instyle.protocol import (
    CANCEL_PREFIX,
    INPUT_PREFIX,
    PREVIEW_PREFIX,
    QUEUE_STYLIZE,
    QUEUE_TRAIN,
    STYLE_IMAGE_PREFIX,
    STYLIZE_JOB,
    TRAIN_JOB,
    ErrorCode,
    JobStatus,
    StylizePayload,
    TrainPayload,
)
from service.exceptions import (
    JobNotCancelable,
    JobNotFound,
    NoResult,
    NoSuchImage,
    PreviewNotReady,
    QueueFull,
    ResultExpired,
    ResultNotReady,
    StyleExists,
)
from service.settings import ServiceSettings

#: Marks a job id as issued here for a day, so an expired job answers 410 rather than 404.
KNOWN_PREFIX = "instyle:known:"
KNOWN_TTL_S = 24 * 3600
#: Job meta that is not a job's detail: shown elsewhere (type, progress, error) or the worker's
#: own bookkeeping (``published``: a training job's result, kept so that a retried attempt does
#: not publish again, ``worker.training``).
INTERNAL_META = frozenset({"type", "progress", "error", "published", "canceled_at"})
#: Held (``SET NX``, with a token) while a training submission checks for a pending job of the
#: same name and queues its own, so that two submissions at once cannot both pass the check.
TRAIN_SUBMIT_LOCK = "instyle:lock:train-submit"
TRAIN_SUBMIT_LOCK_S = 10

_STATUS = {
    RQStatus.QUEUED: JobStatus.queued,
    RQStatus.DEFERRED: JobStatus.queued,
    RQStatus.SCHEDULED: JobStatus.queued,
    RQStatus.CREATED: JobStatus.queued,
    RQStatus.STARTED: JobStatus.started,
    RQStatus.FINISHED: JobStatus.finished,
    RQStatus.FAILED: JobStatus.failed,
    RQStatus.STOPPED: JobStatus.canceled,
    RQStatus.CANCELED: JobStatus.canceled,
}


class JobError(BaseModel):
    code: str
    message: str


class JobView(BaseModel):
    id: str
    type: str
    status: JobStatus
    progress: float
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    error: JobError | None = None
    result_url: str | None = None
    preview_url: str | None = None
    detail: dict[str, Any] = {}


def job_error(job: Job, status: JobStatus) -> JobError | None:
    """The reason a job ended badly: set by the job itself, else read from RQ's failure record."""
    meta_error = job.meta.get("error")
    if status == JobStatus.canceled:  # the worker's own words when it stopped the job (what was kept, ...)
        said = None
        if isinstance(meta_error, dict) and meta_error.get("code") == "canceled":
            said = meta_error.get("message")
        return JobError(code="canceled", message=str(said or "the job was canceled"))
    if status != JobStatus.failed:
        return None
    if isinstance(meta_error, dict) and "code" in meta_error:
        return JobError(code=str(meta_error["code"]), message=str(meta_error.get("message", "")))
    latest = job.latest_result()
    info = (latest.exc_string if latest is not None else None) or ""
    last = next((line for line in reversed(info.strip().splitlines()) if line.strip()), "")
    if "JobTimeoutException" in info:
        return JobError(code=ErrorCode.timeout, message=last or "the job ran past its timeout")
    if "AbandonedJobError" in info or "abandoned" in info.lower():
        attempts = int(job.meta.get("attempts", 1))
        return JobError(
            code=ErrorCode.worker_lost,
            message=f"the worker running the job was lost ({attempts} attempt(s), no retries left)",
        )
    return JobError(code=ErrorCode.internal, message=last or "the job failed")


def server_timing(model_ms: float | None) -> dict[str, str]:
    """A ``Server-Timing`` header with the generator's own time, when the worker recorded it."""
    return {} if model_ms is None else {"Server-Timing": f"model;dur={model_ms:.2f}"}


class JobService:
    def __init__(self, redis: Redis, settings: ServiceSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.stylize_queue = Queue(QUEUE_STYLIZE, connection=redis, serializer=JSONSerializer)

    def queue(self, name: str) -> Queue:
        return Queue(name, connection=self.redis, serializer=JSONSerializer)

    def stylize_timeout(self, output_pixels: int) -> int:
        """Seconds a stylize job with ``output_pixels`` may run (``ServiceSettings.stylize_timeout_s``)."""
        settings = self.settings
        return settings.stylize_timeout_s + math.ceil(settings.stylize_timeout_s_per_megapixel * output_pixels / 1e6)

    def enqueue_stylize(
        self,
        image: bytes,
        style: str,
        max_size: int,
        fmt: str,
        quality: int,
        preserve_color: bool,
        output_pixels: int | None = None,
    ) -> Job:
        """Queue a stylize job; its timeout grows with ``output_pixels`` (default: a
        ``max_size`` square, the most it can be)."""
        depth = self.stylize_queue.count
        if depth >= self.settings.max_queue_depth:
            raise QueueFull(f"{depth} stylize jobs are waiting; try again shortly", retry_after_s=max(1, depth // 10))
        input_key = f"{INPUT_PREFIX}{uuid.uuid4().hex}"
        payload = StylizePayload(
            input_key=input_key, style=style, max_size=max_size, format=fmt,  # type: ignore[arg-type]
            quality=quality, preserve_color=preserve_color, result_ttl_s=self.settings.result_ttl_s,
        )  # fmt: skip
        return self._enqueue(
            self.stylize_queue, input_key, image, self.settings.input_ttl_s, STYLIZE_JOB, payload.model_dump(),
            job_timeout=self.stylize_timeout(max_size * max_size if output_pixels is None else output_pixels),
            result_ttl=self.settings.result_ttl_s,
            failure_ttl=self.settings.result_ttl_s,
            # outlives its input, so a job that waits past ``input_ttl_s`` still reaches a
            # worker and fails as ``input_expired``, instead of vanishing from the queue
            ttl=KNOWN_TTL_S,
            meta={"type": "stylize", "progress": 0.0, "style": style},
        )  # fmt: skip

    def enqueue_train(
        self,
        style_image: bytes,
        name: str,
        title: str,
        generator: dict[str, Any],
        recipe: dict[str, Any],
        replace: bool = False,
    ) -> Job:
        """Queue a training job for style ``name``. Unless ``replace``, a training job for the
        same name still queued or running is a ``StyleExists`` (409): it would publish the style
        first, and this one a second version of it unasked."""
        queue = self.queue(QUEUE_TRAIN)
        if queue.count >= self.settings.max_train_queue_depth:
            raise QueueFull(f"{queue.count} training jobs are waiting; try again later", retry_after_s=60)
        style_key = f"{STYLE_IMAGE_PREFIX}{uuid.uuid4().hex}"
        payload = TrainPayload(name=name, title=title, style_key=style_key, generator=generator, recipe=recipe)
        with self._train_submit_lock():
            if not replace and (pending := self.pending_training(name)) is not None:
                raise StyleExists(
                    f"a training job for style {name!r} is already queued or running (job {pending}); "
                    "send replace=true to publish another version after it"
                )
            return self._enqueue(
                queue, style_key, style_image, self.settings.style_image_ttl_s, TRAIN_JOB, payload.model_dump(),
                job_timeout=self.settings.train_timeout_s,
                result_ttl=self.settings.style_image_ttl_s,
                failure_ttl=self.settings.style_image_ttl_s,
                retry=Retry(max=self.settings.train_retries) if self.settings.train_retries else None,
                meta={
                    "type": "train", "progress": 0.0, "style": name, "iteration": 0, "total": recipe.get("iterations")
                },
            )  # fmt: skip

    def pending_training(self, name: str) -> str | None:
        """The id of a training job for style ``name`` that is queued or running, if any (a
        look at the training queue, at most ``max_train_queue_depth`` jobs, and its started
        registry)."""
        queue = self.queue(QUEUE_TRAIN)
        ids = queue.get_job_ids() + StartedJobRegistry(queue=queue).get_job_ids(cleanup=False)
        for job in Job.fetch_many(ids, connection=self.redis, serializer=JSONSerializer):
            if job is None or job.meta.get("style") != name:  # gone meanwhile, or another style
                continue
            if job.get_status(refresh=False) in (RQStatus.QUEUED, RQStatus.STARTED):
                return job.id
        return None

    @contextlib.contextmanager
    def _train_submit_lock(self) -> Iterator[None]:
        """``TRAIN_SUBMIT_LOCK`` for the duration: a plain ``SET NX`` with a token, which both
        Redis and the embedded mode's fakeredis take (redis-py's ``Lock`` needs Lua)."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + TRAIN_SUBMIT_LOCK_S + 1  # a holder that died: its lock expires first
        while not self.redis.set(TRAIN_SUBMIT_LOCK, token, nx=True, ex=TRAIN_SUBMIT_LOCK_S):
            if time.monotonic() > deadline:
                raise QueueFull("training submissions are busy; try again", retry_after_s=5)
            time.sleep(0.01)
        try:
            yield
        finally:
            if self.redis.get(TRAIN_SUBMIT_LOCK) in (token, token.encode()):
                self.redis.delete(TRAIN_SUBMIT_LOCK)

    def _enqueue(
        self, queue: Queue, key: str, data: bytes, ttl_s: int, func: str, payload: dict[str, Any], **options: Any
    ) -> Job:
        """``data`` stored at ``key`` for ``ttl_s``, the job, and its "known" marker, in one
        transaction (one round trip): a job never exists without its input."""
        with self.redis.pipeline() as pipe:
            pipe.multi()
            pipe.set(key, data, ex=ttl_s)
            job = queue.enqueue(func, payload, pipeline=pipe, **options)
            pipe.set(f"{KNOWN_PREFIX}{job.id}", "1", ex=KNOWN_TTL_S)
            pipe.execute()
        return job

    def reap_abandoned(self) -> None:
        """Retry (or fail) started jobs whose lease ran out: their worker died. Cheap when none did
        (one round trip per queue).

        The cleanup runs under the queue's maintenance lock, the one RQ's workers take for their
        own (``Worker.clean_registries``), and is skipped while another cleaner holds it. Two at
        once could both list a lost attempt's expired entry; the first retries the job, a worker
        starts it again, and the second, finding the job started, took that for the lost attempt
        and retried it a second time while the new attempt ran (seen once as a training job run
        twice in ``tests/e2e``; ``tests/service/test_jobs.py`` plays the interleaving)."""
        for name in (QUEUE_STYLIZE, QUEUE_TRAIN):
            queue = self.queue(name)
            if StartedJobRegistry(queue=queue).get_expired_job_ids():
                telemetry.clean_lost_jobs(queue)

    def preview(self, job: Job) -> bytes:
        if job.get_meta(refresh=False).get("type") != "train":
            raise NoSuchImage(f"job {job.id} is a stylize job: only training jobs have a preview (see its /result)")
        data = self.redis.get(f"{PREVIEW_PREFIX}{job.id}")
        if data is None:
            status = self.status(job)
            if status in (JobStatus.finished, JobStatus.failed, JobStatus.canceled):
                raise NoSuchImage(f"job {job.id} ended {status.value} and has no preview (or it has expired)")
            raise PreviewNotReady(f"job {job.id} has no preview yet")
        return data.encode() if isinstance(data, str) else data

    def fetch(self, job_id: str) -> Job:
        try:
            validate_job_id(job_id)  # "*", "..", spaces: RQ would raise ValueError (a 500)
        except ValueError:
            raise JobNotFound(f"no job {job_id}") from None
        self.reap_abandoned()
        try:
            return Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
        except NoSuchJobError:
            if self.redis.exists(f"{KNOWN_PREFIX}{job_id}"):
                raise ResultExpired(f"job {job_id} has expired") from None
            raise JobNotFound(f"no job {job_id}") from None

    def view(self, job: Job, result_url: str | None, preview_url: str | None = None) -> JobView:
        status = self.status(job)
        meta = job.get_meta(refresh=False)
        is_train = meta.get("type") == "train"
        progress = 1.0 if status == JobStatus.finished else float(meta.get("progress", 0.0))
        detail = {k: v for k, v in meta.items() if k not in INTERNAL_META}
        return JobView(
            id=job.id,
            type=str(meta.get("type", "stylize")),
            status=status,
            progress=progress,
            created_at=job.created_at,
            started_at=job.started_at,
            ended_at=self.ended_at(job, status),
            error=job_error(job, status),
            result_url=result_url if status == JobStatus.finished and not is_train else None,
            preview_url=preview_url if is_train and "preview_iteration" in meta else None,
            detail=detail,
        )

    @staticmethod
    def ended_at(job: Job, status: JobStatus) -> datetime | None:
        """When the job ended. RQ leaves ``ended_at`` unset on a job it fails for a lost worker
        (registry cleanup), whose failure record has the time, and on a job canceled before it
        started, for which ``cancel`` keeps the time in the job's meta."""
        if job.ended_at is not None:
            return job.ended_at
        if status == JobStatus.canceled:
            canceled_at = job.meta.get("canceled_at")
            return datetime.fromisoformat(canceled_at) if isinstance(canceled_at, str) else None
        if status != JobStatus.failed:
            return None
        latest = job.latest_result()
        return latest.created_at if latest is not None else None

    def status(self, job: Job) -> JobStatus:
        status = _STATUS.get(job.get_status(refresh=True), JobStatus.queued)
        if status == JobStatus.failed:
            error = job.get_meta(refresh=True).get("error")
            if isinstance(error, dict) and error.get("code") == ErrorCode.canceled:
                return JobStatus.canceled  # stopped cooperatively at a check point
        return status

    def next_outcome(self, job: Job, seconds: float, after: str = "0-0") -> Result | None:
        """The first outcome the worker records for ``job`` after results-stream entry ``after``
        (success, failure, stop, or a failed attempt that will be retried), waiting up to
        ``seconds`` for it; ``None`` if none came.

        RQ writes each outcome to the job's results stream in the same transaction that sets
        the job's status, so a blocking XREAD wakes the moment the job ends -- no polling -- and
        the entry itself holds the return value: a finished job needs no further status read.
        """
        key = Result.get_key(job.id)
        reply: Any = self.redis.xread({key: after}, count=1, block=max(1, int(seconds * 1000)))
        if not reply:
            return None
        # RESP2 answers [[stream, [[id, fields]]]], RESP3 {stream: [[id, fields]]}
        entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        entry_id, fields = entries[0]
        entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        return Result.restore(job.id, entry, fields, connection=self.redis, serializer=JSONSerializer)

    def result(self, job: Job) -> tuple[bytes, str, float | None]:
        """The result image, its content type, and the model's milliseconds (None if unknown)."""
        if job.get_meta(refresh=False).get("type") == "train":
            raise NoSuchImage(f"job {job.id} trains a style: it has no result image (the style is in /v1/styles)")
        status = self.status(job)
        if status in (JobStatus.failed, JobStatus.canceled):  # final: a client must not wait for it
            error = job_error(job, status)
            reason = f" ({error.code}: {error.message})" if error is not None else ""
            raise NoResult(f"job {job.id} ended {status.value}{reason}: it has no result")
        if status != JobStatus.finished:
            raise ResultNotReady(f"job {job.id} is {status.value}; the result exists once it is finished")
        return self.stored_result(job, job.return_value())

    def stored_result(self, job: Job, value: Any) -> tuple[bytes, str, float | None]:
        """What ``result`` returns, from the finished job's return value ``value``."""
        if not isinstance(value, dict) or "result_key" not in value:
            raise ResultExpired(f"the result of job {job.id} is no longer available")
        data = self.redis.get(value["result_key"])
        if data is None:
            raise ResultExpired(f"the result of job {job.id} has expired")
        model_ms = value.get("model_ms")
        body = data.encode() if isinstance(data, str) else data
        return body, str(value["content_type"]), float(model_ms) if model_ms is not None else None

    def cancel(self, job: Job) -> None:
        status = self.status(job)
        if status in (JobStatus.finished, JobStatus.failed, JobStatus.canceled):
            raise JobNotCancelable(f"job {job.id} is already {status.value}")
        if status == JobStatus.started:
            self.redis.set(f"{CANCEL_PREFIX}{job.id}", "1", ex=KNOWN_TTL_S)
            with contextlib.suppress(InvalidJobOperation):
                send_stop_job_command(self.redis, job.id, serializer=JSONSerializer)
            return
        try:
            job.cancel()
        except InvalidJobOperation as exc:
            raise JobNotCancelable(str(exc)) from None
        job.meta["canceled_at"] = datetime.now(UTC).isoformat()  # RQ sets no ended_at on a job that never ran
        job.save_meta()
        # it ends here, not on a worker: counted with the jobs that end canceled, after 0 s of work
        labels = {"type": str(job.meta.get("type", "stylize")), "status": "canceled"}
        telemetry.observe(self.redis, "instyle_job_duration_seconds", labels, 0.0)
