"""InstyleWorker around RQ: heartbeats rate-limited, no-op states skipped, expected failures
logged in one line."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import fakeredis
import pytest
import torch
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.worker import BaseWorker

from stylenet import buffers
from worker import runner
from worker.runner import InstyleWorker, ThreadWorker, WatchdogDeathPenalty, make_worker, release_idle_arena


def noop() -> str:
    return "ok"


@pytest.fixture
def fresh() -> InstyleWorker:
    return make_worker(fakeredis.FakeRedis(server=fakeredis.FakeServer()), ["stylize"])


@pytest.fixture
def worker(fresh: InstyleWorker) -> InstyleWorker:
    """A worker that has registered itself, as it does when it starts working."""
    fresh.register_birth()
    return fresh


def stamp(w: InstyleWorker) -> bytes | None:
    value = w.connection.hget(w.key, "last_heartbeat")
    assert value is None or isinstance(value, bytes)
    return value


def test_the_suspension_check_runs_at_most_once_a_second(
    worker: InstyleWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RQ looks for ``rq suspend`` before every job (a round trip each); here at most once a
    second, and a suspended worker in burst mode still stops."""
    from rq.exceptions import StopRequested
    from rq.suspension import resume, suspend

    worker.check_for_suspension(burst=False)
    checks: list[int] = []
    real = BaseWorker.check_for_suspension

    def counted(self: BaseWorker, burst: bool) -> None:
        checks.append(1)
        real(self, burst)

    monkeypatch.setattr(BaseWorker, "check_for_suspension", counted)
    worker.check_for_suspension(burst=False)
    assert checks == []  # within the second
    suspend(worker.connection)
    worker._last_suspension_check -= worker.suspension_check_every_s
    with pytest.raises(StopRequested):
        worker.check_for_suspension(burst=True)
    assert checks == [1]
    resume(worker.connection)


def test_a_plain_heartbeat_right_after_another_is_skipped(worker: InstyleWorker) -> None:
    worker.heartbeat()
    first, ttl = stamp(worker), worker.connection.ttl(worker.key)
    assert first is not None and ttl > worker.worker_ttl
    worker.connection.hdel(worker.key, "last_heartbeat")
    worker.heartbeat()
    assert stamp(worker) is None  # nothing was sent
    # once heartbeat_every_s has passed, the next one goes out
    worker._last_beat -= worker.heartbeat_every_s + 0.1
    worker.heartbeat()
    assert stamp(worker) is not None


def test_beats_with_their_own_ttl_always_go_out_and_never_shorten_the_workers_life(worker: InstyleWorker) -> None:
    """A job's start beat carried its own TTL (timeout + 60 s, ~3 min); the plain beats after
    the job were skipped, the worker then blocked up to ``worker_ttl`` - 15 s waiting for the
    next job, and its key expired meanwhile: ``/readyz`` lost a live worker after a burst."""
    worker.heartbeat()
    worker.connection.hdel(worker.key, "last_heartbeat")
    worker.heartbeat(181)  # a job's own TTL: sent although the last beat was just now
    assert stamp(worker) is not None
    assert worker.connection.ttl(worker.key) >= worker.worker_ttl + 59  # not shortened to 181 s
    worker.connection.hdel(worker.key, "last_heartbeat")
    worker.heartbeat()  # the plain beats after the job are skipped, and need not be sent
    assert stamp(worker) is None
    assert worker.connection.ttl(worker.key) > worker.worker_ttl - 15  # outlives the wait for a job


def test_an_unchanged_state_is_not_written_again(worker: InstyleWorker) -> None:
    worker.set_state("idle")
    assert worker.connection.hget(worker.key, "state") == b"idle"
    worker.connection.hdel(worker.key, "state")
    worker.set_state("idle")
    assert worker.connection.hget(worker.key, "state") is None
    worker.set_state("busy")
    assert worker.connection.hget(worker.key, "state") == b"busy"


def test_jobs_back_to_back_send_no_plain_heartbeats_between_them(
    fresh: InstyleWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = fresh
    sent: list[tuple[int | None, bool]] = []  # (TTL, pipelined)
    rq_heartbeat = BaseWorker.heartbeat

    def counting(self: BaseWorker, timeout: int | None = None, pipeline: Any = None) -> None:
        sent.append((timeout, pipeline is not None))
        rq_heartbeat(self, timeout, pipeline)

    monkeypatch.setattr(BaseWorker, "heartbeat", counting)
    queue = Queue("stylize", connection=worker.connection, serializer=JSONSerializer)
    jobs = [queue.enqueue(noop) for _ in range(5)]
    worker.work(burst=True)
    assert [job.get_status(refresh=True) for job in jobs] == [JobStatus.FINISHED] * 5
    # RQ alone sends three plain beats of their own per job (15 here); the suspension check
    # before each dequeue beats within its own pipeline, and each job's start with its TTL
    alone = sent.count((None, False))
    assert alone <= 2, sent
    assert sum(1 for ttl, _ in sent if ttl is not None) >= 5
    assert worker.connection.ttl(worker.key) > 0


def fails_as_expected() -> None:
    from instyle.protocol import ErrorCode
    from worker.jobs import JobFailure

    raise JobFailure(ErrorCode.invalid_image, "cannot decode upload")


def fails_unexpectedly() -> None:
    raise ZeroDivisionError("a bug")


def test_expected_failures_are_one_line_and_bugs_keep_their_traceback(
    fresh: InstyleWorker, caplog: pytest.LogCaptureFixture
) -> None:
    handled: list[str] = []
    fresh.push_exc_handler(lambda job, *exc_info: handled.append(job.id))
    queue = Queue("stylize", connection=fresh.connection, serializer=JSONSerializer)
    expected, bug = queue.enqueue(fails_as_expected), queue.enqueue(fails_unexpectedly)
    with caplog.at_level(logging.INFO):
        fresh.work(burst=True)
    assert expected.get_status(refresh=True) == bug.get_status(refresh=True) == JobStatus.FAILED
    assert handled == [expected.id, bug.id]  # the exception handlers ran for both
    lines = [r for r in caplog.records if expected.id in r.getMessage() and r.levelno >= logging.WARNING]
    assert [(r.levelname, r.getMessage()) for r in lines] == [
        ("WARNING", f"job {expected.id}: invalid_image: cannot decode upload")
    ]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(bug.id in m and "ZeroDivisionError" in m and "Traceback" in m for m in errors)


DONE = (JobStatus.FINISHED, JobStatus.FAILED)


def spins(seconds: float) -> str:
    """Python work (the async exception of a timeout lands between bytecodes)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "done"


def test_the_watchdog_times_out_a_thread_workers_job_and_spares_the_others() -> None:
    """One watchdog thread for every job: a job over its timeout fails as timed out, a job
    within its timeout finishes, and no timer thread is started per job."""
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    worker = make_worker(redis, ["stylize"], ThreadWorker)
    assert worker.death_penalty_class is WatchdogDeathPenalty
    queue = Queue("stylize", connection=redis, serializer=JSONSerializer)
    quick = [queue.enqueue(spins, 0.01, job_timeout=30) for _ in range(5)]
    slow = queue.enqueue(spins, 20, job_timeout=1)
    after = queue.enqueue(spins, 0.01, job_timeout=30)
    before = threading.active_count()
    timers: list[threading.Timer] = []
    original = threading.Timer.__init__

    def counting(self: threading.Timer, *args: Any, **kwargs: Any) -> None:
        timers.append(self)
        original(self, *args, **kwargs)

    start = time.monotonic()
    jobs = [*quick, slow, after]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(threading.Timer, "__init__", counting)
        thread = threading.Thread(target=worker.work, kwargs={"with_scheduler": False})
        thread.start()  # a thread worker works until stopped
        while time.monotonic() - start < 15 and not all(j.get_status(refresh=True) in DONE for j in jobs):
            time.sleep(0.05)
        assert isinstance(worker, ThreadWorker)
        worker.stop()
        thread.join(10)
    assert time.monotonic() - start < 10 and not thread.is_alive()
    assert [j.get_status(refresh=True) for j in [*quick, after]] == [JobStatus.FINISHED] * 6
    assert slow.get_status(refresh=True) == JobStatus.FAILED
    assert "JobTimeoutException" in (slow.latest_result().exc_string or "")
    assert timers == [] and threading.active_count() <= before + 1  # the watchdog, once


def test_a_canceled_penalty_never_fires_and_a_sooner_one_wakes_the_watchdog() -> None:
    fired: list[str] = []

    class Recording(WatchdogDeathPenalty):
        def __init__(self, name: str, timeout: float) -> None:
            super().__init__(timeout, JobTimeoutException)
            self.name = name

        def handle_death_penalty(self) -> None:
            fired.append(self.name)

    late = Recording("late", 30)
    late.setup_death_penalty()
    canceled = Recording("canceled", 0.05)
    canceled.setup_death_penalty()
    canceled.cancel_death_penalty()
    soon = Recording("soon", 0.1)  # armed after a 30 s one: the watchdog must wake for it
    soon.setup_death_penalty()
    time.sleep(0.6)
    late.cancel_death_penalty()
    assert fired == ["soon"]


@pytest.fixture
def arena(monkeypatch: pytest.MonkeyPatch) -> buffers.BufferPool:
    """The process's buffer arena, small, with one pass's worth of pages written."""
    pool = buffers.BufferPool(8 << 20, min_bytes=1)
    monkeypatch.setattr(buffers, "_pool", pool)
    monkeypatch.setattr(buffers, "_configured", True)
    t = pool.take((1, 1, 16, 16), torch.float32)
    assert t is not None
    t.fill_(1.0)
    return pool


def test_an_idle_arena_is_given_back_and_a_busy_one_kept(
    arena: buffers.BufferPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import runner

    trims: list[bool] = []
    monkeypatch.setattr(runner, "release_free_heap", lambda: trims.append(True) or True)
    assert not release_idle_arena(60.0)  # a buffer was placed just now
    held = arena.take((1, 1, 16, 16), torch.float32)
    assert not release_idle_arena(0.0)  # in use
    del held
    assert not trims
    assert release_idle_arena(0.0) and not arena.holds_memory
    assert trims == [True]  # and malloc's free memory with it
    assert not release_idle_arena(0.0)  # nothing left
    assert trims == [True]


@pytest.mark.parametrize("worker_class", [InstyleWorker, ThreadWorker])
def test_a_waiting_worker_gives_the_arena_back(
    arena: buffers.BufferPool, monkeypatch: pytest.MonkeyPatch, worker_class: type[InstyleWorker]
) -> None:
    """A worker waiting for jobs gives an idle arena back after ``ARENA_IDLE_S``, and then
    takes the job that comes."""
    monkeypatch.setattr(runner, "ARENA_IDLE_S", 0.0)
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    worker = make_worker(redis, ["stylize"], worker_class)
    worker.register_birth()

    def late_job() -> None:  # (enqueued in any case after 10 s: a failure, never a hang)
        deadline = time.monotonic() + 10
        while arena.holds_memory and time.monotonic() < deadline:
            time.sleep(0.05)
        Queue("stylize", connection=redis, serializer=JSONSerializer).enqueue(noop)

    feeder = threading.Thread(target=late_job)
    feeder.start()
    result = worker.dequeue_job_and_maintain_ttl(5)  # RQ's own wait would block until a job came
    feeder.join(5)
    assert not arena.holds_memory
    assert result is not None and result[0].func_name.endswith("noop")


def test_unsubscribe_does_not_wait_out_the_pubsub_threads_minute(redis_url: str) -> None:
    """RQ sends UNSUBSCRIBE, then stops its pubsub thread; redis-py's stop() joins the thread
    for as long as it takes. If the thread reads the UNSUBSCRIBE reply before its running flag
    is cleared, it blocks again in ``get_message(timeout=60)`` and a burst worker took a minute
    to exit. Here the thread is made to win that race every time."""
    from redis import Redis

    w = make_worker(Redis.from_url(redis_url), ["stylize"])
    w.subscribe()
    pubsub, thread = w.pubsub, w.pubsub_thread
    assert pubsub is not None and thread is not None
    calls, read = [0], pubsub.get_message

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return read(*args, **kwargs)

    pubsub.get_message = counted  # type: ignore[method-assign]
    send = pubsub.unsubscribe

    def send_then_let_the_thread_read(*args: Any) -> Any:
        seen, sent = calls[0], send(*args)
        deadline = time.monotonic() + 2.0  # until the thread is back in get_message, if it goes back
        while calls[0] == seen and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        return sent

    pubsub.unsubscribe = send_then_let_the_thread_read  # type: ignore[method-assign]
    stopper = threading.Thread(target=w.unsubscribe, daemon=True)
    started = time.monotonic()
    stopper.start()
    stopper.join(15)
    assert not stopper.is_alive(), "unsubscribe waited on the pubsub thread's 60 s read"
    assert not thread.is_alive() and time.monotonic() - started < 5


def fails_with(code: str) -> None:
    """A job that fails as ``code`` says (run by dotted path, below)."""
    from rq import get_current_job

    from instyle.protocol import ErrorCode
    from worker.jobs import fail_job

    job = get_current_job()
    assert job is not None
    job.connection.incr(f"runs:{job.id}")
    raise fail_job(ErrorCode(code), f"failed as {code}")


@pytest.mark.parametrize(("code", "attempts"), [("invalid_image", 1), ("invalid_recipe", 1), ("internal", 3)])
def test_a_failure_that_would_fail_again_is_not_retried(code: str, attempts: int) -> None:
    """``Retry`` is for lost workers and the unexpected: a style image too small to train on
    failed three times as ``internal`` before (three VGG loads, three warnings)."""
    from rq import Retry
    from rq.job import Job

    redis = fakeredis.FakeRedis()
    queue = Queue("train", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.worker.test_runner.fails_with", code, retry=Retry(max=2))
    InstyleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    job = Job.fetch(job.id, connection=redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED and job.meta["error"]["code"] == code
    assert int(redis.get(f"runs:{job.id}")) == attempts


def test_a_training_job_an_earlier_attempt_published_is_not_trained_again(caplog: pytest.LogCaptureFixture) -> None:
    """An attempt retried while it still ran (its lease lapsed in a stalled process, or two
    registry cleanups raced: ``service.jobs.reap_abandoned``) publishes, ends, and finds its job
    queued again: the next attempt returns what was published instead of training from scratch
    and publishing a second version (seen on a slow CPU with the e2e tests' 3 s lease). No
    context, store or training photos are touched."""
    from rq.job import Job

    redis = fakeredis.FakeRedis()
    queue = Queue("train", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("worker.training.train_style", {"name": "survivor"})
    done = {"style": "survivor@1", "final_losses": {"total": 1.5}, "wall_time_s": 40.0}
    job.meta.update(attempts=2, style="survivor@1", published=done)
    job.save_meta()
    with caplog.at_level(logging.WARNING, logger="worker.training"):
        InstyleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    job = Job.fetch(job.id, connection=redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == done
    assert "published survivor@1 already" in caplog.text


def test_train_workers_sweep_the_checkpoints_of_jobs_that_ended_for_good(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    import worker.context

    redis = fakeredis.FakeRedis()
    queue = Queue("train", connection=redis, serializer=JSONSerializer)
    jobs = {status: queue.enqueue("builtins.print") for status in ("failed", "stopped", "queued", "started")}
    for status, job in jobs.items():
        redis.hset(job.key, "status", status)
    names = [*(job.id for job in jobs.values()), "a" * 32, "my-style"]  # no such job: left alone
    for name in names:
        (tmp_path / ".work" / name).mkdir(parents=True)
        (tmp_path / ".work" / name / "checkpoint.pt").write_bytes(b"x")
    store = SimpleNamespace(cache=SimpleNamespace(catalog=SimpleNamespace(writable=SimpleNamespace(root=tmp_path))))
    monkeypatch.setattr(worker.context, "_context", store)
    InstyleWorker([queue], connection=redis, serializer=JSONSerializer).clean_registries()
    left = sorted(p.name for p in (tmp_path / ".work").iterdir())
    assert left == sorted([jobs["queued"].id, jobs["started"].id, "a" * 32, "my-style"])
    stylize = Queue("stylize", connection=redis, serializer=JSONSerializer)
    redis.hset(jobs["queued"].key, "status", "failed")
    InstyleWorker([stylize], connection=redis, serializer=JSONSerializer).clean_registries()  # not a train worker
    assert (tmp_path / ".work" / jobs["queued"].id).is_dir()


def waits_for_a_file(folder: str) -> str:
    """A job that says it started, then runs until the test lets it end (by dotted path, below)."""
    from pathlib import Path

    Path(folder, "started").touch()
    while not Path(folder, "resume").exists():
        time.sleep(0.02)
    return "done"


@pytest.mark.slow
@pytest.mark.parametrize("persistent", [True, False])
def test_a_worker_outlives_a_redis_restart_mid_job(tmp_path: Any, persistent: bool) -> None:
    """A 6 s Redis restart used to end busy workers (RQ's loop quits on the error) and leave the
    job 'started' until its lease ran out; now the worker waits, records the job's failure
    with the reason, and goes on with the queue. A Redis without persistence comes back empty:
    the job is gone with the rest, and the worker goes on (it used to quit on the missing job)."""
    import shutil
    import subprocess

    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from rq.job import Job

    from tests.conftest import free_port

    port = free_port()
    command = [
        str(shutil.which("redis-server")), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "yes" if persistent else "no", "--appendfsync", "always", "--dir", str(tmp_path),
    ]  # fmt: skip

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                return proc
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    servers = [start()]

    def restart_mid_job() -> None:
        while not (tmp_path / "started").exists():
            time.sleep(0.02)
        servers[0].kill()  # a crash: what was written is on disk (appendfsync always)
        servers[0].wait()
        (tmp_path / "resume").touch()  # the job ends while Redis is down
        time.sleep(1.0)
        servers.append(start())

    # no retries in redis-py (its own ride out a few seconds): the outage reaches the worker at once
    connection = redis.Redis(port=port, retry=Retry(NoBackoff(), 0))
    queue = Queue("stylize", connection=connection, serializer=JSONSerializer)
    lost = queue.enqueue("tests.worker.test_runner.waits_for_a_file", str(tmp_path))
    after = queue.enqueue("builtins.len", "abc")
    restarter = threading.Thread(target=restart_mid_job)
    restarter.start()
    try:
        worker = InstyleWorker([queue], connection=connection, serializer=JSONSerializer)
        worker.work(burst=True)
        restarter.join(timeout=30)
        assert worker.crashed is None
        if not persistent:
            assert Job.exists(lost.id, connection=connection) is False and queue.count == 0
            return
        lost = Job.fetch(lost.id, connection=connection, serializer=JSONSerializer)
        assert lost.get_status() == JobStatus.FAILED
        assert "unreachable" in lost.meta["error"]["message"]
        assert Job.fetch(after.id, connection=connection, serializer=JSONSerializer).return_value() == 3
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()


def test_a_worker_registers_again_when_redis_lost_its_data(worker: InstyleWorker) -> None:
    """After a restart without persistence the beats recreated a key holding only
    ``last_heartbeat``, outside the worker registry: ``/readyz`` saw no worker for good."""
    from rq import Worker

    assert [w.name for w in Worker.all(connection=worker.connection)] == [worker.name]
    worker.connection.flushall()
    worker._last_beat -= worker.heartbeat_every_s + 0.1
    worker.heartbeat()
    assert [w.name for w in Worker.all(connection=worker.connection)] == [worker.name]
    assert worker.connection.hget(worker.key, "birth") is not None and stamp(worker) is not None
    worker.connection.hdel(worker.key, "birth")  # registered: the next beats leave the hash alone
    worker._last_beat -= worker.heartbeat_every_s + 0.1
    worker.heartbeat()
    assert worker.connection.hget(worker.key, "birth") is None


@pytest.mark.parametrize("retries", [0, 1])
def test_a_lost_job_is_counted_whoever_finds_it(worker: InstyleWorker, retries: int) -> None:
    """A job whose worker died never reaches the worker's own ``recorded`` block: the registry
    cleanup (here the worker's maintenance; the API's reads use the same handler) counts the
    lost attempt and, with no retry left, the job's end as failed."""
    from rq import Retry
    from rq.exceptions import AbandonedJobError
    from rq.registry import StartedJobRegistry

    from instyle import telemetry

    redis = worker.connection
    queue = Queue("stylize", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue(noop, meta={"type": "stylize"}, retry=Retry(max=retries) if retries else None)
    assert queue.dequeue_any([queue], timeout=None, connection=redis, serializer=JSONSerializer) is not None
    worker.prepare_execution(job)
    worker.prepare_job_execution(job)  # started, then the worker is gone: its lease runs out
    StartedJobRegistry(queue=queue).cleanup(time.time() + 3600, exception_handlers=worker._exc_handlers)
    telemetry.count_lost_job(job, AbandonedJobError)  # found again (the API's cleanup racing the worker's)
    text = "\n".join(telemetry.render(redis))
    assert 'instyle_job_attempts_lost_total{type="stylize"} 1' in text
    ended = 'instyle_job_duration_seconds_count{status="failed",type="stylize"} 1'
    assert (ended in text) == (retries == 0)
    assert job.get_status(refresh=True) == (JobStatus.FAILED if retries == 0 else JobStatus.QUEUED)


def test_a_dead_workers_registration_expires_within_its_ttl_and_a_minute(fresh: InstyleWorker) -> None:
    """RQ's default (420 s) left a dead worker in ``/readyz`` for 8 minutes; ours beat an idle
    worker every ``worker_ttl`` - 15 s and let its key expire ``worker_ttl`` + 60 s after."""
    from worker.settings import DEFAULT_WORKER_TTL_S, WorkerSettings

    assert fresh.worker_ttl == WorkerSettings().worker_ttl_s == DEFAULT_WORKER_TTL_S == 60
    assert fresh.dequeue_timeout == 45
    short = make_worker(fresh.connection, ["stylize"], worker_ttl=30)
    short.register_birth()
    assert short.dequeue_timeout == 15 and 80 < short.connection.ttl(short.key) <= 90
    short._last_beat -= short.heartbeat_every_s + 0.1
    short.connection.expire(short.key, 5)
    short.heartbeat()  # a plain beat renews the key for the full ttl + 60 s
    assert 80 < short.connection.ttl(short.key) <= 90


def test_a_worker_that_quits_on_an_unexpected_error_says_so(
    fresh: InstyleWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RQ's loop logs "found an unhandled exception, quitting" and returns as after a clean stop;
    the worker keeps the error, so that ``instyle worker`` exits 1 and a supervisor restarts it."""
    queue = Queue("stylize", connection=fresh.connection, serializer=JSONSerializer)
    queue.enqueue("tests.worker.test_runner.noop")

    def broken(job: Any, queue: Any) -> None:
        raise RuntimeError("a bug in the worker's own code")

    monkeypatch.setattr(fresh, "_execute_jobs", broken)
    fresh.work(burst=True, with_scheduler=False)
    assert isinstance(fresh.crashed, RuntimeError)


def test_a_jobs_end_gives_the_workers_key_back_its_plain_ttl(fresh: InstyleWorker) -> None:
    """A job's start beat sets the worker's key to the job's TTL (its lease, here longer than a
    plain beat's); its end sets it back, so that ``/readyz`` stops counting a worker that died
    right after a job within ``worker_ttl`` + 60 s, not the job's TTL."""
    fresh.stylize_lease_s = 660
    queue = Queue("stylize", connection=fresh.connection, serializer=JSONSerializer)
    job = queue.enqueue("tests.worker.test_runner.noop", job_timeout=600)
    ttls: dict[str, int] = {}
    beat, succeed = fresh.heartbeat, fresh.handle_job_success

    def heartbeat(timeout: int | None = None, pipeline: Any = None) -> None:
        beat(timeout, pipeline)
        if timeout is not None and pipeline is not None:
            pipeline.execute()  # RQ's own, sent a little later: sent now to read what it did
            ttls["job started"] = int(fresh.connection.ttl(fresh.key))

    def handle_job_success(*args: Any, **kwargs: Any) -> None:
        succeed(*args, **kwargs)
        ttls["job ended"] = int(fresh.connection.ttl(fresh.key))

    fresh.heartbeat = heartbeat  # type: ignore[method-assign]
    fresh.handle_job_success = handle_job_success  # type: ignore[method-assign]
    fresh.work(burst=True, with_scheduler=False)
    assert job.get_status() == JobStatus.FINISHED and fresh.crashed is None
    assert ttls["job started"] > 600
    assert 0 < ttls["job ended"] <= fresh.worker_ttl + 60
