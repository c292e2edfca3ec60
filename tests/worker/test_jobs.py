"""The stylize job's report from inside a long (tiled) generator pass."""

from __future__ import annotations

from collections.abc import Callable

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

import worker.jobs
from instyle.protocol import CANCEL_PREFIX, ErrorCode
from worker.jobs import JobFailure, pass_reporter

Setup = tuple[fakeredis.FakeRedis, Job, Callable[[float], None]]


@pytest.fixture
def reporting(monkeypatch: pytest.MonkeyPatch) -> Setup:
    """A queued job at progress 0.2, and the reporter of its pass, reporting every call."""
    monkeypatch.setattr(worker.jobs, "PASS_REPORT_EVERY_S", 0.0)
    redis = fakeredis.FakeRedis()
    job = Queue("stylize", connection=redis, serializer=JSONSerializer).enqueue(
        "builtins.print", meta={"progress": 0.2}
    )
    report = pass_reporter(redis, job)
    assert report is not None
    return redis, job, report


def _progress(redis: fakeredis.FakeRedis, job: Job) -> float:
    return float(Job.fetch(job.id, connection=redis, serializer=JSONSerializer).meta["progress"])


def test_reports_are_spaced_and_map_the_pass_onto_the_jobs_progress(
    reporting: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis, job, _ = reporting
    monkeypatch.setattr(worker.jobs, "PASS_REPORT_EVERY_S", 1.0)
    report = pass_reporter(redis, job)
    assert report is not None
    report(0.5)  # within PASS_REPORT_EVERY_S of the start: nothing written
    assert _progress(redis, job) == 0.2
    monkeypatch.setattr(worker.jobs, "PASS_REPORT_EVERY_S", 0.0)
    report(0.5)
    assert _progress(redis, job) == pytest.approx(0.55)
    report(1.0)
    assert _progress(redis, job) == pytest.approx(0.9)  # the pass ends where encoding starts


def test_a_cancel_request_stops_the_pass(reporting: Setup) -> None:
    redis, job, report = reporting
    report(0.1)
    redis.set(f"{CANCEL_PREFIX}{job.id}", "1")
    with pytest.raises(JobFailure) as failure:
        report(0.2)
    assert failure.value.code == ErrorCode.canceled


def test_a_redis_hiccup_skips_a_report_not_the_pass(reporting: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    redis, job, report = reporting
    monkeypatch.setattr(fakeredis.FakeRedis, "pipeline", lambda self, transaction=True: _Failing())
    report(0.5)  # no exception
    monkeypatch.undo()
    assert _progress(redis, job) == 0.2


class _Failing:
    """A pipeline whose Redis is gone."""

    def hset(self, *args: object, **kwargs: object) -> None:
        pass

    def exists(self, *args: object) -> None:
        pass

    def __len__(self) -> int:
        return 2

    def execute(self, *args: object, **kwargs: object) -> list[object]:
        raise RedisConnectionError("redis went away")


def test_outside_a_job_there_is_no_reporter() -> None:
    assert pass_reporter(fakeredis.FakeRedis(), None) is None
