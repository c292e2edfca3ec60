"""Worker processes and the embedded worker thread.

* ``InstyleWorker``: RQ's non-forking ``SimpleWorker`` (CUDA cannot be used across fork; the
  generator cache stays warm between jobs). SIGTERM/SIGINT finish the current job, then exit.
* With ``batch_size`` > 1, a dequeued stylize job brings the jobs already waiting behind it
  into one generator batch (``worker.batching``); each still runs as its own RQ job.
* ``ThreadWorker``: the same, runnable in a thread (embedded mode): no signal handlers (only
  the main thread may install them), a timer-based job timeout instead of SIGALRM, and its
  OpenMP pool released after each job, so that an idle thread does not slow the others.
  Stylize threads share torch's CPU threads out among the passes running at once
  (``ThreadShare``). On a CPU the embedded mode runs its stylize workers as processes
  instead, each a ``ThreadWorker`` in its main thread (``worker.processes``).
"""

from __future__ import annotations

import contextlib
import heapq
import inspect
import itertools
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker, get_current_job
from rq.exceptions import InvalidJobOperation, NoSuchJobError, StopRequested
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty

from instyle import telemetry
from instyle.protocol import QUEUE_STYLIZE, QUEUE_TRAIN, ErrorCode
from stylenet import buffers
from stylenet.config import release_free_heap, release_openmp_pool, set_openmp_threads
from worker.settings import DEFAULT_WORKER_TTL_S

log = logging.getLogger(__name__)


#: The worker of each thread (set when it starts working), so a long job can renew its lease.
#: Per thread: embedded mode runs several workers in one process (stylize and train queues).
_local = threading.local()


def current_worker() -> InstyleWorker | None:
    """The worker running in this thread, if any."""
    return getattr(_local, "worker", None)


#: Seconds without a generator pass after which a worker gives its buffer arena back.
ARENA_IDLE_S = 30.0


def release_idle_arena(idle_s: float | None = None) -> bool:
    """Give the process's buffer arena (``stylenet.buffers``) back when no pass has placed a
    buffer in it for ``idle_s`` seconds and none is running: while jobs keep coming, each pass
    reuses the pages the last one faulted in; once they stop, the memory goes back."""
    idle_s = ARENA_IDLE_S if idle_s is None else idle_s
    arena = buffers.pool()
    if arena is None or not arena.release(idle_s):
        return False
    release_free_heap()  # and what malloc keeps for the next pass (tune_malloc): up to 512 MB
    log.info("buffer arena given back after %.0f s without a pass", idle_s)
    return True


def _arena_held() -> bool:
    arena = buffers.pool()
    return arena is not None and arena.holds_memory


class InstyleWorker(SimpleWorker):
    """Non-forking worker with JSON (de)serialization of jobs.

    Jobs get a short lease in RQ's started registry instead of ``timeout + 60 s``: training jobs
    ``lease_s``, renewed by ``keep_lease()`` from a thread of their own while the job runs;
    stylize jobs ``stylize_lease_s``, renewed by the worker's ``LeaseKeeper`` (one thread for all
    its jobs: ``shared_lease()``). If the worker dies, the lease runs out, registry cleanup
    retries the job (``Retry``) on another worker or fails it as ``worker_lost``, and a training
    job resumes from its checkpoint.
    """

    lease_s: int = 120
    stylize_lease_s: int = 30
    _lease_keeper: LeaseKeeper | None = None
    #: Stylize jobs run through the generator together (1 = no batching; ``INSTYLE_BATCH_SIZE``).
    batch_size: int = 1
    #: A plain heartbeat within this many seconds of the last one is skipped (``heartbeat``).
    heartbeat_every_s: float = 5.0
    #: Monotonic time of the last heartbeat sent (each left the key at least a plain beat's TTL).
    _last_beat: float = -math.inf
    #: The error that made RQ's work loop quit ("found an unhandled exception"), if one did:
    #: ``instyle worker`` then exits 1, so that a supervisor restarting on failure restarts it.
    crashed: BaseException | None = None

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ's heartbeat, rate-limited: RQ sends a plain one (three unpipelined commands) before
        and after every dequeue and after every job, nine round trips per job of the ~30 a
        stylize job costs the worker. Within ``heartbeat_every_s`` of the last beat a plain one
        changes nothing but the ``last_heartbeat`` stamp, so it is skipped; beats with a TTL of
        their own (a job starting, a lease renewed) or inside a pipeline are always sent.

        No beat leaves the worker's key shorter-lived than a plain one would (``worker_ttl`` +
        60 s): the skipped beats are the ones before a blocking wait for the next job of up to
        ``worker_ttl`` - 15 s, so a job's own shorter TTL (its timeout + 60 s) let an idle
        worker's key expire mid-wait after a burst of jobs, and ``/readyz`` lost a live worker
        for good (its later beats renew a key that is no longer registered). An idle worker
        still beats every wait, and a dead one's key expires ``worker_ttl`` + 60 s after its
        last beat."""
        plain_ttl = self.worker_ttl + 60
        at = time.monotonic()
        if timeout is None and pipeline is None and at - self._last_beat < self.heartbeat_every_s:
            return
        ttl = max(timeout or plain_ttl, plain_ttl)
        if pipeline is not None or self.birth_date is None:
            super().heartbeat(ttl, pipeline)
        else:  # one round trip (RQ sends three), which also sees whether the registration is still there
            with self.connection.pipeline(transaction=False) as beat:
                beat.exists(self.key)
                super().heartbeat(ttl, beat)
                registered = beat.execute()[0]
            if not registered:
                self._register_again()
        self._last_beat = at

    def cleanup_execution(self, job: Job, pipeline: Pipeline, execution: Any = None) -> None:
        """RQ's, in the transaction that records a job's end, plus the worker's key back to a
        plain beat's TTL: the job's start beat gave it the job's (its timeout + 60 s: 3 minutes
        for a small photo, 15 for an 8192² one), and a worker that died right after the job
        stayed counted by ``/readyz`` that long instead of ``worker_ttl`` + 60 s."""
        super().cleanup_execution(job, pipeline=pipeline, execution=execution)
        pipeline.expire(self.key, self.worker_ttl + 60)

    def _register_again(self) -> None:
        """Redis lost the worker's registration (restarted without its data): the beat alone
        recreated a key with only ``last_heartbeat``, and ``/readyz`` never saw the worker again."""
        log.warning(
            "worker %s: its registration is gone from Redis (restarted without its data?); registering again", self.name
        )
        self.connection.delete(self.key)
        self.register_birth()

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """RQ's, without the round trip when the state does not change (it sets "idle" twice
        between two jobs)."""
        if pipeline is None and state == self._state:
            return
        super().set_state(state, pipeline)

    #: RQ looks for ``rq suspend`` before every dequeue, a round trip per job; at most this often
    #: here (an idle worker blocks for a job in slices of a second anyway).
    suspension_check_every_s: float = 1.0
    _last_suspension_check: float = -math.inf

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's, at most every ``suspension_check_every_s``: a suspended worker still stops
        taking jobs within that."""
        if time.monotonic() - self._last_suspension_check < self.suspension_check_every_s:
            return
        super().check_for_suspension(burst)
        self._last_suspension_check = time.monotonic()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        if job.origin == QUEUE_TRAIN:
            return self.lease_s
        if job.origin == QUEUE_STYLIZE:
            return self.stylize_lease_s
        return super().get_heartbeat_ttl(job, working_time)

    def lease_keeper(self) -> LeaseKeeper:
        """The thread that renews this worker's stylize jobs' leases (started at the first)."""
        if self._lease_keeper is None:
            self._lease_keeper = LeaseKeeper(self, every_s=self.stylize_lease_s / 3)
        return self._lease_keeper

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """A job that ended for a reason it recorded itself (``worker.jobs.JobFailure``: a photo
        that does not decode, an expired input, a cancel request) is logged in one line, not
        with RQ's ERROR and traceback, which stay for the failures nobody expected. The
        exception handlers run either way."""
        from worker.jobs import JobFailure  # worker.jobs imports this module

        error = exc_info[1] if len(exc_info) > 1 else None
        if not isinstance(error, JobFailure):
            super().handle_exception(job, *exc_info)
            return
        log.log(logging.INFO if error.code == ErrorCode.canceled else logging.WARNING, "job %s: %s", job.id, error)
        for handler in self._exc_handlers:  # RQ's walk: a handler returning a falsy non-None value stops it
            carry_on = handler(job, *exc_info)
            if carry_on is not None and not carry_on:
                break

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """RQ's; while the buffer arena holds memory, the wait is cut into slices of at most
        ``ARENA_IDLE_S``, after each of which an idle arena is given back (``release_idle_arena``)."""
        while timeout is not None and max_idle_time is None and _arena_held():
            slice_s = max(1, min(timeout, math.ceil(ARENA_IDLE_S)))
            result = super().dequeue_job_and_maintain_ttl(slice_s, max_idle_time=slice_s)
            if result is not None:
                return result
            release_idle_arena()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def clean_registries(self) -> None:
        """RQ's maintenance, then, on a train worker, the checkpoint folders of training jobs
        that ended for good (``worker.training.sweep_work_dirs``). A failed sweep is logged; the
        worker carries on."""
        super().clean_registries()
        if QUEUE_TRAIN not in self.queue_names():
            return
        try:
            from worker.context import built_context
            from worker.training import sweep_work_dirs

            ctx = built_context()
            writable = ctx.cache.catalog.writable if ctx is not None else None
            if writable is not None:
                sweep_work_dirs(self.connection, writable.root)
        except Exception:
            log.warning("could not sweep the training checkpoints", exc_info=True)

    def unsubscribe(self) -> None:
        """RQ's, with the pubsub thread's running flag cleared *before* UNSUBSCRIBE goes out.

        RQ sends UNSUBSCRIBE, counting on its reply to wake the thread from its blocking
        ``get_message(timeout=60)``, then stops the thread; redis-py's ``stop()`` joins it with no
        time limit. When the thread read the reply before the flag was cleared, it went back to
        its read and the worker waited out the minute (a burst worker's exit, a server's
        shutdown). With the flag already cleared, the reply always ends the thread."""
        thread = self.pubsub_thread
        if thread is not None:
            if "timeout" in inspect.signature(thread.stop).parameters:
                thread.stop(timeout=0)  # clears the flag; the join waits for nothing
            else:
                thread.stop()  # an older redis-py's stop() takes no timeout and only clears the flag
        super().unsubscribe()

    def work(self, *args: Any, **kwargs: Any) -> bool:
        _local.worker = self
        try:
            return super().work(*args, **kwargs)
        finally:
            _local.worker = None

    #: Longest pause between two attempts to reach Redis again after it was lost during a job.
    redis_retry_max_s: float = 5.0

    def execute_job(self, job: Job, queue: Queue) -> None:
        """RQ's, surviving Redis going away while the job runs: RQ's work loop quits on the
        error (a 6 s Redis restart took busy workers down, and their queued jobs waited for a
        new worker). The worker waits for Redis instead, then records the job as failed with
        what happened, unless its outcome was recorded after all (a training job with
        retries left is retried, and resumes from its checkpoint)."""
        try:
            try:
                self._execute_jobs(job, queue)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("job %s: Redis was lost while it ran (%s); waiting for it to come back", job.id, exc)
                self._wait_for_redis()
                self._fail_lost_job(job, queue, exc)
        except StopRequested:
            raise
        except Exception as exc:  # RQ's loop quits on it
            self.crashed = exc
            raise

    def _wait_for_redis(self) -> None:
        pause = 0.1
        while True:
            try:
                self.connection.ping()
                return
            except (RedisConnectionError, RedisTimeoutError):
                if self._stop_requested:
                    raise StopRequested() from None
                time.sleep(pause)
                pause = min(pause * 2, self.redis_retry_max_s)

    def _fail_lost_job(self, job: Job, queue: Queue, error: Exception) -> None:
        try:
            status = job.get_status(refresh=True)
        except (InvalidJobOperation, NoSuchJobError):  # RQ's words for a job hash that is gone
            # a Redis without persistence came back empty: the job, its queue and its client's
            # view of it went with the data; nothing is left to record it in
            log.warning("job %s: gone from Redis after it came back (its data was lost); going on", job.id)
            return
        if status != JobStatus.STARTED:
            return  # its outcome reached Redis before the connection went
        message = f"the job queue (Redis) was unreachable as the job ran, and its outcome was lost: {error}"
        job.meta["error"] = {"code": ErrorCode.internal.value, "message": message}
        job.save_meta()
        execution = next((e for e in self.executions.values() if e.job_id == job.id), None)
        self.handle_job_failure(job, queue, exc_string=message, execution=execution)
        log.warning("job %s: recorded as failed after Redis came back", job.id)

    def _execute_jobs(self, job: Job, queue: Queue) -> None:
        if self.batch_size <= 1 or queue.name != QUEUE_STYLIZE:
            super().execute_job(job, queue)
            return
        from worker.batching import prefetch, take_waiting
        from worker.context import current_context

        dequeue = {"job_class": self.job_class, "serializer": self.serializer}
        batch = [job, *take_waiting(queue, self.batch_size - 1, **dequeue)]
        ctx = current_context()
        if len(batch) > 1:
            try:
                ctx.prefetched.update(prefetch(batch, ctx, self.connection))
            except Exception:  # only an optimization: every job still runs, one by one
                log.warning("batch of %d jobs not prefetched", len(batch), exc_info=True)
        try:
            for member in batch:
                if member is not job and member.get_status(refresh=True) == JobStatus.CANCELED:
                    self.connection.lrem(queue.intermediate_queue_key, 1, member.id)
                    continue
                super().execute_job(member, queue)
                self.heartbeat()
        finally:
            for member in batch:
                ctx.prefetched.pop(member.id, None)


def renew_lease(job: Job | None = None, worker: InstyleWorker | None = None) -> None:
    """Extend a running job's lease (worker, execution and job heartbeats). No-op outside a worker.
    ``worker``: the one running ``job`` (default: this thread's)."""
    worker = worker or current_worker()
    job = job or get_current_job()
    if worker is None or job is None:
        return
    for execution in list(worker.executions.values()):
        if execution.job_id == job.id:
            worker.maintain_heartbeats(job, execution)


@contextlib.contextmanager
def keep_lease() -> Iterator[None]:
    """Renew the current job's lease from a background thread for as long as the block runs.

    The thread dies with the process, so a dead worker's job still loses its lease; a job that
    hangs is still bounded by its RQ timeout.
    """
    worker, job = current_worker(), get_current_job()
    if worker is None or job is None:
        yield
        return
    stop = threading.Event()
    every = max(0.5, worker.lease_s / 4)

    def beat() -> None:
        while not stop.wait(every):
            try:
                renew_lease(job, worker)
            except Exception:
                log.warning("could not renew the lease of job %s", job.id, exc_info=True)

    renew_lease(job, worker)
    thread = threading.Thread(target=beat, name=f"lease-{job.id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


class LeaseKeeper:
    """Renews the leases of the jobs ``add``ed to it, every ``every_s``, from one daemon thread
    per worker: a stylize job is too short for a thread of its own (``keep_lease``'s), and one
    that runs for minutes (a tiled 8192² photo) must not lose its lease. ``remove`` takes the
    lock a renewal holds, so none is sent once it returns: a renewal after the job's end would
    put its finished execution back in the started registry."""

    def __init__(self, worker: InstyleWorker, every_s: float) -> None:
        self.worker = worker
        self.every_s = max(0.5, every_s)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="instyle-lease-keeper", daemon=True)
                self._thread.start()

    def remove(self, job: Job) -> None:
        with self._lock:
            self._jobs.pop(job.id, None)

    def _run(self) -> None:
        while True:
            time.sleep(self.every_s)
            with self._lock:
                for job in list(self._jobs.values()):
                    try:
                        renew_lease(job, self.worker)
                    except Exception:
                        log.warning("could not renew the lease of job %s", job.id, exc_info=True)


@contextlib.contextmanager
def shared_lease() -> Iterator[None]:
    """Have the current job's lease renewed by its worker's ``LeaseKeeper`` while the block runs
    (the job function's whole body: RQ records its end after it returns)."""
    worker, job = current_worker(), get_current_job()
    if worker is None or job is None:
        yield
        return
    keeper = worker.lease_keeper()
    keeper.add(job)
    try:
        yield
    finally:
        keeper.remove(job)


class ThreadShare:
    """Splits torch's CPU threads among the stylize passes that one process runs at once.

    Alone, a pass gets them all (the lowest latency). With k passes at once each gets
    ``total // k`` (at least 1), so together they never run more OpenMP threads than ``total``:
    two 2-thread passes on 2 cores make four threads for two cores, where a thread that
    loses its core holds its partner at every barrier, spinning. A pass keeps the count it
    started with; a thread's count is its own (``stylenet.config.set_openmp_threads``).
    """

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.running = 0
        self._lock = threading.Lock()

    def _add(self, k: int) -> int:
        """Count ``k`` more passes as running; the passes running now."""
        with self._lock:
            self.running += k
            return self.running

    @contextlib.contextmanager
    def claim(self) -> Iterator[int]:
        """For the duration of one job: set this thread's share, and yield it."""
        threads = max(1, self.total // self._add(1))
        set_openmp_threads(threads)
        try:
            yield threads
        finally:
            self._add(-1)


@contextlib.contextmanager
def all_threads() -> Iterator[None]:
    """Within a job: this thread takes all of its share's threads, whatever else runs.

    For passes that run one at a time per process anyway (over
    ``stylenet.inference.EXCLUSIVE_PIXELS``): a large image started beside another job would
    otherwise keep its half share for the whole of its long pass. No-op outside a shared thread.
    """
    share = getattr(current_worker(), "share", None)
    if isinstance(share, ThreadShare):
        set_openmp_threads(share.total)
    yield


class _Watchdog:
    """One daemon thread that times out the thread workers' jobs, earliest deadline first.

    RQ's ``TimerDeathPenalty`` starts a ``threading.Timer`` thread for every job (a thread
    created, started and joined per 512² image, with the GIL hand-offs that go with it).
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self._heap: list[tuple[float, int, WatchdogDeathPenalty]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._waiting_until = math.inf  # the deadline the watchdog sleeps towards

    def arm(self, penalty: WatchdogDeathPenalty, deadline: float) -> None:
        with self.cond:
            self._drop_disarmed()
            heapq.heappush(self._heap, (deadline, next(self._order), penalty))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="instyle-job-watchdog", daemon=True)
                self._thread.start()
            elif deadline < self._waiting_until:  # woken only for a sooner deadline, not per job
                self.cond.notify()

    def _drop_disarmed(self) -> None:
        while self._heap and not self._heap[0][2].armed:
            heapq.heappop(self._heap)

    def _run(self) -> None:
        with self.cond:
            while True:
                self._drop_disarmed()
                if not self._heap:
                    self._waiting_until = math.inf
                    self.cond.wait()
                    continue
                deadline, _, penalty = self._heap[0]
                if (delay := deadline - time.monotonic()) > 0:
                    self._waiting_until = deadline
                    self.cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                penalty.armed = False
                try:
                    penalty.handle_death_penalty()
                except (ValueError, SystemError):  # the job's thread is gone
                    log.exception("could not time out a job")


_watchdog = _Watchdog()


class WatchdogDeathPenalty(TimerDeathPenalty):
    """RQ's thread-safe job timeout (an exception raised asynchronously in the job's thread),
    timed by the process's one watchdog thread instead of a new timer thread per job."""

    armed = False

    def setup_death_penalty(self) -> None:
        if self._timeout > 0:
            self.armed = True
            _watchdog.arm(self, time.monotonic() + self._timeout)

    def cancel_death_penalty(self) -> None:
        with _watchdog.cond:  # the watchdog raises only while armed, under this lock
            self.armed = False


class ThreadWorker(InstyleWorker):
    death_penalty_class = WatchdogDeathPenalty
    #: Shared by the process's stylize threads (``None``: each uses torch's thread count).
    share: ThreadShare | None = None
    #: Seconds an idle thread worker blocks on its queues before it looks whether it was asked to
    #: ``stop`` (RQ's own wait is ``worker_ttl`` - 15 s and only a signal ends it).
    idle_poll_s: int = 1

    def stop(self) -> None:
        """Leave the work loop after the current job, or within ``idle_poll_s`` when idle.

        Unlike RQ's ``request_stop`` (a signal handler), this never raises in the caller."""
        self._stop_requested = True

    @property
    def stopping(self) -> bool:
        """``stop`` was called: the embedding process is going (a training job stops at its
        next iteration, ``worker.training``: torch still computing in a thread when the
        interpreter exits aborts the process)."""
        return bool(self._stop_requested)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        while not self._stop_requested:
            # each slice heartbeats and blocks for at most idle_poll_s; None = nothing came
            result = super().dequeue_job_and_maintain_ttl(self.idle_poll_s, max_idle_time=self.idle_poll_s)
            if result is not None:
                return result
            release_idle_arena()  # only once no thread of the process has run a pass for a while
        return None

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            with self.share.claim() if self.share is not None else contextlib.nullcontext():
                super().execute_job(job, queue)
        finally:
            # Threads share the process's cores: an idle worker's OpenMP pool would slow the
            # others' generator passes (stylenet.config.release_openmp_pool).
            release_openmp_pool()

    def _install_signal_handlers(self) -> None:
        """Signals belong to the main thread; the embedding process stops us with ``stop``."""


def make_worker(
    redis: Redis,
    queues: Sequence[str],
    cls: type[InstyleWorker] = InstyleWorker,
    name: str | None = None,
    lease_s: int = 120,
    maintenance_s: int = 60,
    batch_size: int = 1,
    worker_ttl: int = DEFAULT_WORKER_TTL_S,
    stylize_lease_s: int = 30,
) -> InstyleWorker:
    qs = [Queue(q, connection=redis, serializer=JSONSerializer) for q in queues]
    worker = cls(
        qs, connection=redis, serializer=JSONSerializer, name=name, maintenance_interval=maintenance_s,
        worker_ttl=worker_ttl,
    )  # fmt: skip
    worker.lease_s = lease_s
    worker.stylize_lease_s = stylize_lease_s
    worker.batch_size = batch_size
    worker.push_exc_handler(telemetry.count_lost_job)  # its registry cleanup finds lost jobs too
    return worker


def start_thread_worker(
    redis: Redis,
    queues: Sequence[str],
    lease_s: int = 120,
    maintenance_s: int = 60,
    batch_size: int = 1,
    share: ThreadShare | None = None,
    worker_ttl: int = DEFAULT_WORKER_TTL_S,
    stylize_lease_s: int = 30,
) -> tuple[ThreadWorker, threading.Thread]:
    """A worker for ``queues`` working in a new daemon thread (its jobs claim from ``share``)."""
    worker = make_worker(
        redis, queues, ThreadWorker, lease_s=lease_s, maintenance_s=maintenance_s, batch_size=batch_size,
        worker_ttl=worker_ttl, stylize_lease_s=stylize_lease_s,
    )  # fmt: skip
    assert isinstance(worker, ThreadWorker)
    worker.share = share
    thread = threading.Thread(
        target=worker.work,
        kwargs={"with_scheduler": False, "logging_level": "WARNING"},
        name=f"instyle-worker-{'+'.join(queues)}-{worker.name[:8]}",
        daemon=True,
    )
    thread.start()
    return worker, thread


def stop_thread_workers(workers: Sequence[tuple[ThreadWorker, threading.Thread]], timeout_s: float = 10.0) -> int:
    """Ask every thread worker to stop, then wait up to ``timeout_s`` in all for their threads.

    Idle workers leave within ``ThreadWorker.idle_poll_s``; a busy one finishes its job first.
    Returns how many threads are still running at the deadline (busy with a long job).
    """
    for worker, _ in workers:
        worker.stop()
    deadline = time.monotonic() + timeout_s
    for _, thread in workers:
        thread.join(max(0.0, deadline - time.monotonic()))
    return sum(thread.is_alive() for _, thread in workers)
