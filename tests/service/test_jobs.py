"""The service's job bookkeeping against RQ's registries (fakeredis)."""

from __future__ import annotations

import time
from typing import Any

import fakeredis
import pytest
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from instyle.protocol import QUEUE_TRAIN
from service.jobs import JobService
from service.settings import ServiceSettings
from worker.runner import make_worker


def noop() -> None:
    return None


@pytest.mark.parametrize("locked", [True, False], ids=["under-the-lock", "rq-alone"])
def test_a_lost_attempt_is_retried_once_while_a_worker_cleans_at_the_same_time(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, locked: bool
) -> None:
    """A worker died mid-job; the API's reap lists its expired entry and, before it reads the
    job, a worker's maintenance retries it and a worker starts it again (injected here). Under
    the maintenance lock the worker's cleanup waits its turn (skipped: the API's reap handles the
    entry, once); RQ's cleanup alone (``locked=False``: the lock ignored) retries the running job a
    second time."""
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    service = JobService(redis, ServiceSettings(redis_url="redis://unused", store=tmp_path))
    queue = Queue(QUEUE_TRAIN, connection=redis, serializer=JSONSerializer)
    lost, second = make_worker(redis, [QUEUE_TRAIN]), make_worker(redis, [QUEUE_TRAIN])
    job = queue.enqueue(noop, meta={"type": "train"}, retry=Retry(max=3))
    assert queue.dequeue_any([queue], timeout=None, connection=redis, serializer=JSONSerializer) is not None
    lost.prepare_execution(job)
    lost.prepare_job_execution(job)
    started = StartedJobRegistry(queue=queue).key  # the lost attempt's lease ran out an hour ago
    entries: list[bytes] = list(redis.zrange(started, 0, -1))
    redis.zadd(started, {entry: time.time() - 3600 for entry in entries})
    if not locked:
        monkeypatch.setattr(Queue, "acquire_maintenance_lock", lambda self: True)
        monkeypatch.setattr(Queue, "release_maintenance_lock", lambda self: None)

    fetch = Job.fetch
    injected: list[str] = []

    def fetch_after_a_worker_moved(job_id: str, *args: Any, **kwargs: Any) -> Job:
        if not injected:  # once: the worker's maintenance, then a worker starts the job again
            injected.append(job_id)
            second.clean_registries()
            if queue.dequeue_any([queue], timeout=None, connection=redis, serializer=JSONSerializer) is not None:
                again = fetch(job_id, connection=redis, serializer=JSONSerializer)
                second.prepare_execution(again)
                second.prepare_job_execution(again)
        return fetch(job_id, *args, **kwargs)

    monkeypatch.setattr(Job, "fetch", staticmethod(fetch_after_a_worker_moved))
    service.reap_abandoned()
    monkeypatch.setattr(Job, "fetch", staticmethod(fetch))
    job = Job.fetch(job.id, connection=redis, serializer=JSONSerializer)
    if locked:  # retried once by the reap; no second attempt was started in between
        assert job.get_status() == JobStatus.QUEUED and job.retries_left == 2
        assert redis.get(queue.registry_cleaning_key) is None  # the lock given back
    else:  # RQ alone: retried by the worker, started, then retried again by the reap while running
        assert job.get_status() == JobStatus.QUEUED and job.retries_left == 1
        assert len(StartedJobRegistry(queue=queue).get_job_ids()) == 1  # the running attempt's entry
