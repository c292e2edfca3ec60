"""The embedded mode's stylize workers as child processes (``instyle serve`` on a CPU).

A stylize thread in the server's own process shares its interpreter lock with the HTTP event
loop: each torch call of a generator pass takes the lock back, and waits for it while the
event loop (or the other stylize thread) runs Python. Under load that left ~4 % of the two
cores idle; as processes, every pass has an interpreter of its own (docs/performance.md,
"Stylize workers as processes"). The children share what the threads shared through files in
the private Redis's folder:

* ``passes``: one byte per child, set while its pass runs, so that a pass alone takes all of
  torch's threads and two at once half each (``ProcessShare``, as ``ThreadShare`` for threads);
* ``exclusive.lock``: the ``flock`` that large passes take in turn
  (``stylenet.inference.EXCLUSIVE_PIXELS``), released by the kernel if its holder dies.

The parent restarts a child that exits while the server runs. Its job, if it had one, is
retried or failed as ``worker_lost`` by the registry cleanup, as for any lost worker, but at
once (``settle_dead_worker``: the parent saw the child die, so its job's lease is ended then,
not its timeout + 60 s later), and its registration goes with it. A child ends with its parent
(SIGTERM from the kernel) and on SIGTERM finishes its job first.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.runner import ThreadShare

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

PASSES_FILE = "passes"
#: The ``flock`` every change to ``PASSES_FILE`` is made under.
PASSES_LOCK = "passes.lock"
EXCLUSIVE_FILE = "exclusive.lock"
#: libgomp's spin count for the children's OpenMP threads (``GOMP_SPINCOUNT``) unless the
#: environment sets one (or ``OMP_WAIT_POLICY``). Within one process libgomp spins only briefly
#: while it runs more OpenMP threads than there are cores; split into processes, none of them
#: sees the others' threads, and a pass that started alone with every thread spun up to 300 000
#: times at each barrier on a core the other process's pass needed (`perf`: libgomp 3 % of the
#: server's samples, against 0.7 % with threads). On the AMX Xeon, 8 clients, three alternated
#: pairs: 12.94-13.70 -> 13.59-14.86 images/s; a lone 512² pass 74-83 -> 72-73 ms.
SPIN_COUNT = 20_000
#: A child that exits within this many seconds of starting is restarted after a growing pause.
QUICK_EXIT_S = 30.0
#: Longest pause before restarting a child that keeps exiting at once.
MAX_RESTART_PAUSE_S = 60.0


class FileLock:
    """A lock shared by processes (``flock`` on ``path``) and by the threads of each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._threads = threading.Lock()

    def __enter__(self) -> FileLock:
        self._threads.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def close(self) -> None:
        os.close(self._fd)


class ProcessShare(ThreadShare):
    """``ThreadShare`` across processes: slot ``slot`` of the byte map ``folder/PASSES_FILE`` is
    this process's count of running passes; a pass takes ``total`` // (all slots' sum) threads."""

    def __init__(self, total: int, folder: Path, slot: int) -> None:
        super().__init__(total)
        self.slot = slot
        self._lock_file = FileLock(folder / PASSES_LOCK)
        with (folder / PASSES_FILE).open("r+b") as f:
            self._map = mmap.mmap(f.fileno(), 0)
        if not 0 <= slot < len(self._map):
            raise ValueError(f"slot {slot} is outside {folder / PASSES_FILE} ({len(self._map)} slots)")

    def _add(self, k: int) -> int:
        with self._lock_file:
            self._map[self.slot] = max(0, self._map[self.slot] + k)
            return sum(self._map[:])


def child_env(env: Mapping[str, str], redis_url: str) -> dict[str, str]:
    """The environment of a stylize process: ``env``, Redis at ``redis_url``, ``SPIN_COUNT``."""
    out = {**env, "INSTYLE_REDIS_URL": redis_url}
    if "GOMP_SPINCOUNT" not in out and "OMP_WAIT_POLICY" not in out:
        out["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return out


def create_share_files(folder: Path, slots: int) -> None:
    """The files the children of ``StylizeProcesses`` share, in ``folder``."""
    (folder / PASSES_FILE).write_bytes(bytes(slots))
    (folder / EXCLUSIVE_FILE).touch(mode=0o600)


def clear_slot(folder: Path, slot: int) -> None:
    """Zero ``slot`` of the pass map: its child died, maybe in the middle of a pass."""
    lock = FileLock(folder / PASSES_LOCK)
    try:
        with lock, (folder / PASSES_FILE).open("r+b") as f:
            f.seek(slot)
            f.write(b"\0")
    finally:
        lock.close()


def settle_dead_worker(redis: Redis, pid: int) -> list[str]:
    """Settle what the RQ worker of process ``pid`` (on this host, dead) left: the lease of the
    job it was running ends now, the registry cleanup retries or fails that job as any lost
    worker's (``worker_lost``, counted by ``instyle.telemetry.count_lost_job``), and the
    worker's registration is removed, so that ``/readyz`` stops counting it. Returns the ids of
    the jobs settled. Without this the job stayed "started" for its timeout + 60 s."""
    import socket

    from rq import Queue, Worker
    from rq.registry import StartedJobRegistry
    from rq.serializers import JSONSerializer

    from instyle import telemetry

    settled: list[str] = []
    for worker in Worker.all(connection=redis, serializer=JSONSerializer):
        if worker.pid != pid or worker.hostname != socket.gethostname():
            continue
        job_id = worker.get_current_job_id()
        for name in worker.queue_names():
            queue = Queue(name, connection=redis, serializer=JSONSerializer)
            registry = StartedJobRegistry(queue=queue)
            entries: list[Any] = redis.zrange(registry.key, 0, -1)
            members = [m for m in entries if registry.parse_job_id(m) == job_id]
            if not members:
                continue
            redis.zadd(registry.key, dict.fromkeys(members, 1), xx=True)  # its lease ends now
            telemetry.clean_lost_jobs(queue)
            settled.append(str(job_id))
        worker.register_death()
    return settled


class StylizeProcesses:
    """``count`` stylize worker processes on the Redis at ``redis_url``, sharing ``folder``;
    restarted when one exits, until ``stop``."""

    def __init__(
        self, count: int, redis_url: str, folder: Path, log_format: str = "text", env: Mapping[str, str] | None = None
    ) -> None:
        self.count = count
        self.folder = folder
        self.redis_url = redis_url
        self.log_format = log_format
        self.env = child_env(os.environ if env is None else env, redis_url)
        create_share_files(folder, count)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.restarts = 0
        self._procs: list[subprocess.Popen[bytes]] = []
        self._started: list[float] = []
        self._pause: list[float] = [0.0] * count
        for slot in range(count):
            self._procs.append(self._spawn(slot))
            self._started.append(time.monotonic())
        self._watcher = threading.Thread(target=self._watch, name="instyle-stylize-processes", daemon=True)
        self._watcher.start()

    def _spawn(self, slot: int) -> subprocess.Popen[bytes]:
        from instyle.embedded_redis import die_with_parent

        cmd = [sys.executable, "-m", "worker.processes", "--folder", str(self.folder), "--slot", str(slot)]
        cmd += ["--parent", str(os.getpid()), "--log-format", self.log_format]
        cmd += ["--log-level", str(logging.getLogger().getEffectiveLevel())]
        return subprocess.Popen(
            cmd, env=self.env, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent(),
            start_new_session=True,  # a terminal's Ctrl-C reaches the server, which stops the children
        )  # fmt: skip

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            for slot in range(self.count):
                with self._lock:
                    proc = self._procs[slot]
                    if proc.poll() is None or self._stopping.is_set():
                        continue
                    lived = time.monotonic() - self._started[slot]
                    pause = self._pause[slot] = (
                        min(MAX_RESTART_PAUSE_S, max(1.0, 2 * self._pause[slot])) if lived < QUICK_EXIT_S else 0.0
                    )
                log.warning(
                    "stylize worker process %d (pid %d) exited with %s after %.0f s; starting another%s",
                    slot, proc.pid, proc.returncode, lived, f" in {pause:g} s" if pause else "",
                )  # fmt: skip
                clear_slot(self.folder, slot)
                self._settle(proc.pid)
                if pause and self._stopping.wait(pause):
                    return
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self._procs[slot] = self._spawn(slot)
                    self._started[slot] = time.monotonic()
                    self.restarts += 1

    def _settle(self, pid: int) -> None:
        """``settle_dead_worker`` for a child that exited; never fails the watcher."""
        from redis import Redis

        try:
            with Redis.from_url(self.redis_url) as redis:
                for job_id in settle_dead_worker(redis, pid):
                    log.warning("job %s of stylize worker process %d found lost at once", job_id, pid)
        except Exception:  # the cleanup of the job's registry will find it when its lease runs out
            log.warning("could not settle the jobs of stylize worker process %d", pid, exc_info=True)

    def wait_ready(self, redis: Redis, timeout_s: float = 300.0) -> None:
        """Return once every child has registered as a worker on ``redis`` (its styles warm);
        raise ``RuntimeError`` if one exits first or they take longer than ``timeout_s``."""
        from rq import Queue, Worker

        from instyle.protocol import QUEUE_STYLIZE

        queue = Queue(QUEUE_STYLIZE, connection=redis)
        deadline = time.monotonic() + timeout_s
        while Worker.count(connection=redis, queue=queue) < self.count:
            with self._lock:
                ended = [p.returncode for p in self._procs if p.poll() is not None]
                restarted = self.restarts
            if ended or restarted:  # one that failed at once may have been replaced already
                code = f" with {ended[0]}" if ended else ""
                raise RuntimeError(f"a stylize worker process exited{code} as it started (see its log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stylize worker processes did not start within {timeout_s:g} s")
            time.sleep(0.1)

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM every child (each finishes its job first), wait up to ``timeout_s`` in all,
        then kill those still running; returns how many had to be killed."""
        self._stopping.set()
        self._watcher.join()
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout_s
        killed = 0
        for proc in self._procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                killed += 1
        return killed


def _child(folder: Path, slot: int, parent: int) -> int:
    """A stylize worker process: ``instyle worker --queues stylize`` sharing the threads and the
    large-pass lock with its siblings through ``folder``, until SIGTERM or its parent is gone."""
    from stylenet.config import tune_malloc, use_huge_pages

    use_huge_pages()  # as the CLI, before torch loads
    tune_malloc()
    import torch
    from redis import Redis

    from instyle.protocol import QUEUE_STYLIZE
    from stylenet import inference
    from worker.context import build_context
    from worker.runner import ThreadWorker, make_worker
    from worker.settings import WorkerSettings

    if os.getppid() != parent:  # the server ended while this one was starting
        return 0
    settings = WorkerSettings()
    assert settings.redis_url, "StylizeProcesses sets INSTYLE_REDIS_URL"
    redis = Redis.from_url(settings.redis_url)
    build_context(settings, redis)
    inference.share_exclusive_lock(FileLock(folder / EXCLUSIVE_FILE))
    worker = make_worker(
        redis, [QUEUE_STYLIZE], ThreadWorker, lease_s=settings.train_lease_s,
        maintenance_s=settings.maintenance_s, batch_size=settings.batch_size, worker_ttl=settings.worker_ttl_s,
        stylize_lease_s=settings.stylize_lease_s,
    )  # fmt: skip
    assert isinstance(worker, ThreadWorker)
    worker.share = ProcessShare(torch.get_num_threads(), folder, slot)

    def stop(signum: int, frame: object) -> None:
        worker.stop()  # after the current job; an idle worker within a poll

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=_orphan_watch, args=(parent, worker), name="instyle-parent-watch", daemon=True).start()
    worker.work(with_scheduler=False, logging_level="WARNING")
    return 1 if worker.crashed is not None else 0  # either way the server starts another


def _orphan_watch(parent: int, worker: Any) -> None:
    """Stop ``worker`` should the server go without telling it (killed outright): its Redis went
    with it, so a job in flight has nowhere to report; exit shortly after."""
    while os.getppid() == parent:
        time.sleep(1.0)
    worker.stop()
    time.sleep(10.0)
    os._exit(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="a stylize worker process of `instyle serve` (not run by hand)")
    p.add_argument("--folder", type=Path, required=True)
    p.add_argument("--slot", type=int, required=True)
    p.add_argument("--parent", type=int, required=True)
    p.add_argument("--log-level", type=int, default=logging.INFO)
    p.add_argument("--log-format", default="text")
    args = p.parse_args(argv)
    from instyle.logs import configure

    configure(args.log_level, args.log_format)
    from model_store.exceptions import StoreError
    from stylenet.exceptions import StylenetError

    try:
        return _child(args.folder, args.slot, args.parent)
    except (StoreError, StylenetError) as exc:  # e.g. a warm style that is not in the store
        log.error("stylize worker process %d cannot start: %s", args.slot, exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
