"""What one stylize job costs the worker that runs it, split into the job and RQ around it.

    python benchmarks/job_cost.py                         # 300 jobs a round, the generator replaced by a copy
    python benchmarks/job_cost.py --generator             # the real generator
    python benchmarks/job_cost.py --jobs 300 --rounds 3 --size 512

Starts a private ``redis-server`` on a Unix socket (embedded mode's, ``instyle.embedded_redis``),
then, each round, queues ``--jobs`` stylize jobs of a ``--size``² JPEG through
``JobService.enqueue_stylize`` (the API's call) and runs one stylize worker in burst mode in this
process until the queue is empty, made and logging as a stylize process of ``instyle serve``
makes it (``worker.runner.make_worker``, RQ's own log lines at WARNING). With the null generator
(the default) the model step is ``benchmarks.service_cost``'s copy of its input, so what is left
is the service's own work for a job. Measured, per job, in CPU time of this process
(``time.process_time``; the redis-server's is not in it):

* **enqueue**: ``JobService.enqueue_stylize`` (the photo, the job and its marker in one transaction);
* **worker**: everything the worker does for a job, of which
* **job function**: ``worker.jobs.stylize`` (its Redis pipelines, the decode, the pass, the
  encode, the result) and **RQ**: the rest (the dequeue, the job's fetch, RQ's bookkeeping before
  and after it, the worker's heartbeats);
* **round trips**: the worker's writes to Redis's socket (a command or a pipeline each), and
  **commands**: the Redis commands the worker sent (``INFO commandstats``), the most frequent named
  (the worker's start and end, registration and all, spread over the round's jobs).

Prints a table (the median over rounds and the range) and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.options import shipped_style  # noqa: E402 -- the repo on the path first

#: The figures per job, in the order printed.
FIGURES = ("enqueue ms", "worker ms", "job function ms", "RQ ms", "round trips", "commands")


@contextlib.contextmanager
def wrapped(owner: Any, name: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """``owner.name`` replaced by ``wrap(owner.name)`` for the duration, then put back."""
    original = getattr(owner, name)
    setattr(owner, name, wrap(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def counted_and_timed(totals: dict[str, float]) -> Iterator[None]:
    """While open, add to ``totals``: ``writes``, redis-py's writes to its sockets (a command or a
    pipeline each), and ``job_s``, the CPU seconds spent in ``worker.jobs._stylize``."""
    from redis.connection import AbstractConnection

    from worker import jobs

    def count(send: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            totals["writes"] += 1
            return send(*args, **kwargs)

        return counted

    def time_it(inner: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                totals["job_s"] += time.process_time() - start

        return timed

    with wrapped(AbstractConnection, "send_packed_command", count), wrapped(jobs, "_stylize", time_it):
        yield


@contextlib.contextmanager
def service_like(null_generator: bool) -> Iterator[None]:
    """Logging as a stylize process configures it (its lines thrown away), and with
    ``null_generator`` the engines' model step copied; both undone after."""
    from instyle.logs import configure
    from stylenet import fast

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    steps = {engine: engine.forward_bytes for engine in (fast.JohnsonEngine, fast.UlyanovEngine)}
    configure(logging.INFO, "text")
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(io.StringIO())
    if null_generator:
        from benchmarks.service_cost import _copy_the_model_step

        _copy_the_model_step()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for engine, step in steps.items():
            engine.forward_bytes = step  # type: ignore[method-assign]


def run_round(redis: Any, jobs: int, photo: bytes, style: str, size: int) -> dict[str, Any]:
    """Queue ``jobs`` stylize jobs, run them all in one burst worker; the costs per job."""
    from benchmarks.service_cost import command_calls, commands_per_image
    from instyle.protocol import QUEUE_STYLIZE
    from service.jobs import JobService
    from service.settings import ServiceSettings
    from worker.runner import make_worker

    service = JobService(redis, ServiceSettings(max_queue_depth=jobs + 1))
    start = time.process_time()
    queued = [service.enqueue_stylize(photo, style, size, "jpeg", 90, False) for _ in range(jobs)]
    enqueue_s = time.process_time() - start
    worker = make_worker(redis, [QUEUE_STYLIZE])
    calls0 = command_calls(redis)
    totals = {"writes": 0.0, "job_s": 0.0}
    with counted_and_timed(totals):
        start = time.process_time()
        worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
        worker_s = time.process_time() - start
    commands = commands_per_image(calls0, command_calls(redis), jobs)  # the INFO calls left out
    finished = sum(1 for job in queued if job.get_status(refresh=True) == "finished")
    if finished != jobs:
        raise RuntimeError(f"{jobs - finished} of {jobs} jobs did not finish (see the log above)")
    total = commands.pop("total")
    per_job = 1000 / jobs
    return {
        "jobs": jobs,
        "enqueue ms": round(enqueue_s * per_job, 3),
        "worker ms": round(worker_s * per_job, 3),
        "job function ms": round(totals["job_s"] * per_job, 3),
        "RQ ms": round((worker_s - totals["job_s"]) * per_job, 3),
        "round trips": round(totals["writes"] / jobs, 2),
        "commands": round(total, 2),
        "commands_per_job": {k: round(v, 2) for k, v in commands.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="side of the square JPEG queued")
    p.add_argument("--style", type=shipped_style, default="starry-night")
    p.add_argument("--jobs", type=int, default=300, help="jobs a round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--generator", action="store_true", help="keep the real generator (default: a copy)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "job-cost.json")
    args = p.parse_args(argv)
    if args.jobs < 1 or args.rounds < 1:
        p.error("--jobs and --rounds must be at least 1")

    from stylenet.config import tune_malloc

    tune_malloc()  # as the CLI does, before torch loads
    from benchmarks.service import jpeg
    from instyle.embedded_redis import open_embedded_redis
    from worker.context import build_context
    from worker.settings import WorkerSettings

    photo = jpeg(args.size)
    embedded = open_embedded_redis("server")
    started = dt.datetime.now(dt.UTC)
    try:
        redis = embedded.client
        build_context(WorkerSettings(redis_url=embedded.url, warm_styles=[args.style]), redis)
        rounds = []
        with service_like(null_generator=not args.generator):
            for r in range(args.rounds):
                rounds.append(run_round(redis, args.jobs, photo, args.style, args.size))
                print(f"[round {r + 1}] " + ", ".join(f"{k} {rounds[-1][k]}" for k in FIGURES), file=sys.stderr)
    finally:
        embedded.close()
    summary = {
        k: {
            "median": round(statistics.median(r[k] for r in rounds), 3),
            "min": min(r[k] for r in rounds),
            "max": max(r[k] for r in rounds),
        }
        for k in FIGURES
    }
    commands = {
        k: round(statistics.median(r["commands_per_job"].get(k, 0.0) for r in rounds), 2)
        for k in rounds[-1]["commands_per_job"]
    }
    from benchmarks.inference import machine
    from benchmarks.service_cost import generator_label

    result = {
        "benchmark": "job_cost",
        "command": "python benchmarks/job_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "generator": generator_label(args.generator)[0],
        "size": args.size,
        "style": args.style,
        "per_job": summary,
        "commands_per_job": commands,
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    what = generator_label(args.generator)[1]
    print(f"{args.jobs} stylize jobs a round of a {args.size}² JPEG, one burst worker, {what}\n")
    print("| per job | median | range over rounds |")
    print("|---|---|---|")
    for k in FIGURES:
        s = summary[k]
        print(f"| {k} | {s['median']} | {s['min']}-{s['max']} |")
    print("\nRedis commands per job (median): " + ", ".join(f"{k.upper()} {v}" for k, v in list(commands.items())[:10]))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
