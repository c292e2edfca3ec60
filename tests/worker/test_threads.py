"""Several worker threads in one process, as `instyle serve` runs them (embedded mode)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import torch
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from stylenet.config import set_openmp_threads
from worker.runner import (
    ThreadShare,
    ThreadWorker,
    all_threads,
    keep_lease,
    start_thread_worker,
    stop_thread_workers,
)

#: Both stylize jobs must be inside ``meet`` at once to get past it.
_barrier = threading.Barrier(2, timeout=20)


def meet() -> str:
    _barrier.wait()
    return threading.current_thread().name


def meet_and_count() -> int:
    """Meets the other stylize job inside a job, then reports this thread's torch thread count."""
    _barrier.wait()
    return torch.get_num_threads()


def count_threads() -> int:
    return torch.get_num_threads()


def meet_then_take_all() -> list[int]:
    """Meets the other job, then does what a large image's job does (worker.jobs)."""
    _barrier.wait()
    counts = [torch.get_num_threads()]
    with all_threads():
        counts.append(torch.get_num_threads())
    return counts


def leased_nap(seconds: float) -> str:
    with keep_lease():
        time.sleep(seconds)
    return "done"


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def start(redis: fakeredis.FakeRedis) -> Iterator[Callable[..., None]]:
    """Start a thread worker for one queue; all of them are told to stop afterwards."""
    workers: list[tuple[ThreadWorker, threading.Thread]] = []

    def start_one(queue: str, **kwargs: Any) -> None:
        workers.append(start_thread_worker(redis, [queue], **kwargs))

    yield start_one
    assert stop_thread_workers(workers) == 0


def _wait(job: Job, seconds: float = 30) -> JobStatus | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = job.get_status(refresh=True)
        if status in (JobStatus.FINISHED, JobStatus.FAILED):
            return status
        time.sleep(0.05)
    return job.get_status(refresh=True)


def test_two_stylize_threads_run_two_jobs_at_once(redis: fakeredis.FakeRedis, start: Callable[..., None]) -> None:
    for _ in range(2):
        start("stylize")
    queue = Queue("stylize", connection=redis, serializer=JSONSerializer)
    jobs = [queue.enqueue("tests.worker.test_threads.meet") for _ in range(2)]
    assert [_wait(job) for job in jobs] == [JobStatus.FINISHED, JobStatus.FINISHED]
    names = {job.return_value(refresh=True) for job in jobs}
    assert len(names) == 2 and all(str(n).startswith("instyle-worker-stylize-") for n in names)


def test_stylize_threads_share_torchs_threads_among_the_jobs_running_at_once(
    redis: fakeredis.FakeRedis, start: Callable[..., None]
) -> None:
    """Alone a job gets all of the share's threads; two at once get half each (rounded down)."""
    if not set_openmp_threads(torch.get_num_threads()):
        pytest.skip("torch's OpenMP runtime here is not libgomp")
    share = ThreadShare(5)
    for _ in range(2):
        start("stylize", share=share)
    queue = Queue("stylize", connection=redis, serializer=JSONSerializer)
    jobs = [queue.enqueue("tests.worker.test_threads.meet_and_count") for _ in range(2)]
    assert [_wait(job) for job in jobs] == [JobStatus.FINISHED, JobStatus.FINISHED]
    # the first to start claimed 5 // 1; the second, while the first ran, 5 // 2
    assert sorted(int(job.return_value(refresh=True)) for job in jobs) == [2, 5]
    lone = queue.enqueue("tests.worker.test_threads.count_threads")
    assert _wait(lone) == JobStatus.FINISHED and lone.return_value(refresh=True) == 5
    assert share.running == 0
    # a pass that runs alone anyway (a large image) takes them all, even beside another job
    jobs = [queue.enqueue("tests.worker.test_threads.meet_then_take_all") for _ in range(2)]
    assert [_wait(job) for job in jobs] == [JobStatus.FINISHED, JobStatus.FINISHED]
    assert sorted(job.return_value(refresh=True) for job in jobs) == [[2, 5], [5, 5]]


def test_each_worker_thread_renews_its_own_jobs_lease(redis: fakeredis.FakeRedis, start: Callable[..., None]) -> None:
    """The training thread's job keeps its 2 s lease for 5 s although a stylize worker started
    after it in the same process (the lease belongs to the thread's worker, not the last one)."""
    start("train", lease_s=2)
    time.sleep(0.2)  # the train worker is working before the stylize one starts
    start("stylize", lease_s=2)
    queue = Queue("train", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.worker.test_threads.leased_nap", 5.0)
    started = StartedJobRegistry(queue=queue)
    deadline = time.monotonic() + 30
    while job.get_status(refresh=True) not in (JobStatus.FINISHED, JobStatus.FAILED) and time.monotonic() < deadline:
        started.cleanup()  # what the API does when a job is read: reap jobs whose lease ran out
        time.sleep(0.2)
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert job.return_value(refresh=True) == "done"
    assert FailedJobRegistry(queue=queue).get_job_ids() == []


def test_a_worker_thread_releases_its_openmp_pool_after_each_job(
    redis: fakeredis.FakeRedis, start: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle worker thread's OpenMP pool would slow the other threads' generator passes."""
    released: list[str] = []
    monkeypatch.setattr("worker.runner.release_openmp_pool", lambda: released.append(threading.current_thread().name))
    start("stylize")
    queue = Queue("stylize", connection=redis, serializer=JSONSerializer)
    ok, bad = queue.enqueue("tests.worker.test_threads.leased_nap", 0.0), queue.enqueue("builtins.len", 3)
    assert [_wait(ok), _wait(bad)] == [JobStatus.FINISHED, JobStatus.FAILED]
    deadline = time.monotonic() + 10  # released once the job's bookkeeping is done, after its status
    while len(released) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(released) == 2 and all(n.startswith("instyle-worker-stylize-") for n in released)


def test_stop_ends_idle_and_busy_worker_threads_without_raising(redis: fakeredis.FakeRedis) -> None:
    """`instyle serve` stops its worker threads on shutdown: idle ones leave within a poll, a
    busy one after its job (which still finishes), and nothing raises in the stopping thread."""
    idle = start_thread_worker(redis, ["train"])
    busy = start_thread_worker(redis, ["stylize"])
    queue = Queue("stylize", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.worker.test_threads.leased_nap", 1.0)
    deadline = time.monotonic() + 10
    while job.get_status(refresh=True) != JobStatus.STARTED and time.monotonic() < deadline:
        time.sleep(0.02)
    start = time.monotonic()
    assert stop_thread_workers([idle, busy], timeout_s=20) == 0
    assert time.monotonic() - start < 1.0 + 2 * ThreadWorker.idle_poll_s + 2
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert not idle[1].is_alive() and not busy[1].is_alive()
    late = queue.enqueue("tests.worker.test_threads.leased_nap", 0.0)  # a stopped worker takes no more jobs
    time.sleep(2 * ThreadWorker.idle_poll_s)
    assert late.get_status(refresh=True) == JobStatus.QUEUED and queue.count == 1
