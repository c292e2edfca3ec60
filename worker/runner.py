"""Worker processes and the embedded worker thread.

* ``InstyleWorker``: RQ's non-forking ``SimpleWorker`` (CUDA cannot be used across fork; the
  generator cache stays warm between jobs). SIGTERM/SIGINT finish the current job, then exit.
* ``ThreadWorker``: the same, runnable in a thread (embedded mode): no signal handlers (only
  the main thread may install them) and a timer-based job timeout instead of SIGALRM.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from redis import Redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty

log = logging.getLogger(__name__)


class InstyleWorker(SimpleWorker):
    """Non-forking worker with JSON (de)serialization of jobs."""


class ThreadWorker(InstyleWorker):
    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        """Signals belong to the main thread; the embedding process stops us with ``request_stop``."""


def make_worker(
    redis: Redis, queues: Sequence[str], cls: type[InstyleWorker] = InstyleWorker, name: str | None = None
) -> InstyleWorker:
    qs = [Queue(q, connection=redis, serializer=JSONSerializer) for q in queues]
    return cls(qs, connection=redis, serializer=JSONSerializer, name=name)


def start_thread_worker(redis: Redis, queues: Sequence[str]) -> tuple[ThreadWorker, threading.Thread]:
    worker = make_worker(redis, queues, ThreadWorker)
    assert isinstance(worker, ThreadWorker)
    thread = threading.Thread(
        target=worker.work,
        kwargs={"with_scheduler": False, "logging_level": "WARNING"},
        name="instyle-worker",
        daemon=True,
    )
    thread.start()
    return worker, thread
