"""What the service itself costs per image, thread by thread.

    python benchmarks/service_cost.py                         # the generator replaced by a copy
    python benchmarks/service_cost.py --generator             # the real generator
    python benchmarks/service_cost.py --clients 8 --seconds 10 --rounds 5

Starts ``instyle serve`` in embedded mode (as ``benchmarks/service.py`` does) through a launcher
that, by default (without ``--generator``), replaces the engines' model step (``forward_bytes``) with a
copy of its input (in the stylize processes too, through a ``sitecustomize`` on their
``PYTHONPATH``): what is left of the server's CPU is the service's own work (HTTP, the
multipart form, the upload check, Redis and RQ, decode, encode). ``--clients`` clients post a
``--size``² JPEG back to back for ``--seconds``, ``--rounds`` times; before and after each round the
launcher reads the CPU time of each of its live threads (``/proc/self/task``), grouped by what
they are:

* **event loop**: uvicorn's thread (HTTP, FastAPI, the form, enqueueing, ``?wait``);
* **stylize threads**: the embedded RQ workers when they are threads
  (``INSTYLE_STYLIZE_PROCESSES=false``; RQ's bookkeeping, decode, the pass, encode);
* **thread pool**: AnyIO's worker threads (the upload check);
* **native threads**: threads Python did not start (OpenMP's, redis-py's none);
* **ended threads**: CPU of threads that ended during the round (the process's total less its
  live threads');
* **stylize processes**: the embedded mode's stylize workers when they are processes
  (``worker.processes``, the default on a CPU): RQ's bookkeeping, decode, the pass, encode;
* **redis-server**: embedded mode's private Redis.

Per image: each group's CPU ms over the images delivered. Prints a table (the median over rounds
and the range) and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.options import key_value, positive_int, shipped_style  # noqa: E402 -- the repo on the path first
from benchmarks.service import (  # noqa: E402
    banner,
    cpu_seconds,
    free_port,
    jpeg,
    multipart,
    start_server,
    stylize,
    throughput,
)

#: Environment variable naming the FIFO on which the launcher takes snapshot requests.
FIFO_ENV = "INSTYLE_BENCH_CPU_FIFO"
#: Set to 1 without ``--generator``: the launcher replaces the model step with a copy.
NULL_ENV = "INSTYLE_BENCH_NULL_GENERATOR"


def group(name: str) -> str:
    """The group a Python thread's name belongs to."""
    if name == "MainThread":
        return "event loop"
    if name.startswith("instyle-worker-stylize"):
        return "stylize threads"
    if name.startswith("AnyIO worker thread"):
        return "thread pool"
    if name.startswith("instyle-worker-"):
        return "other worker threads"
    return "other Python threads"


def _task_cpu(tid: int | str) -> float:
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def snapshot() -> dict[str, float]:
    """CPU seconds so far of this process's live threads by group, and of the whole process."""
    named = {t.native_id: group(t.name) for t in threading.enumerate() if t.native_id is not None}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            cpu = _task_cpu(task.name)
        except (OSError, ValueError, IndexError):
            continue  # ended while being read
        key = named.get(int(task.name), "native threads")
        out[key] = out.get(key, 0.0) + cpu
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    out["process"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def _serve_snapshots(fifo: str) -> None:
    """Launcher side: each line read from ``fifo`` names a file to write a snapshot to."""
    while True:
        with open(fifo) as requests:
            for line in requests:
                path = Path(line.strip())
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(snapshot()))
                tmp.rename(path)


def _copy_the_model_step() -> None:
    from stylenet import fast

    def copy(self: Any, pixels: Any) -> Any:
        return pixels.clone()

    for engine in (fast.JohnsonEngine, fast.UlyanovEngine):
        engine.forward_bytes = copy  # type: ignore[method-assign]


#: Put on the server's ``PYTHONPATH`` by ``--null``: the stylize processes (``worker.processes``),
#: started afresh by the server, copy the model step as the launcher does.
SITECUSTOMIZE = f"""import os, sys
if os.environ.get({NULL_ENV!r}) == "1" and "worker.processes" in sys.orig_argv:
    sys.path.insert(0, {str(REPO)!r})
    from benchmarks.service_cost import _copy_the_model_step
    _copy_the_model_step()
"""


def launch(argv: list[str]) -> int:
    """``instyle`` with ``argv``, the model step copied when asked, snapshots served on the FIFO."""
    from stylenet.config import tune_malloc, use_huge_pages

    use_huge_pages()  # as instyle's main does, before torch is imported below
    tune_malloc()
    if os.environ.get(NULL_ENV) == "1":
        # imported in a passing thread, as the CLI loads models: torch work on the main thread
        # would leave it an OpenMP pool that slows every stylize thread's pass (worker.context)
        patcher = threading.Thread(target=_copy_the_model_step, name="bench-patch")
        patcher.start()
        patcher.join()
    if fifo := os.environ.get(FIFO_ENV):
        threading.Thread(target=_serve_snapshots, args=(fifo,), name="bench-cpu-snapshots", daemon=True).start()
    from instyle.cli import main

    return main(argv)


def request_snapshot(fifo: str, directory: Path, n: int) -> dict[str, float]:
    path = directory / f"snap-{n}.json"
    with open(fifo, "w") as f:
        f.write(f"{path}\n")
    deadline = time.monotonic() + 10
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not answer a CPU snapshot request")
        time.sleep(0.01)
    return dict(json.loads(path.read_text()))


def per_image(
    before: dict[str, float], after: dict[str, float], images: int, children: dict[str, float]
) -> dict[str, float]:
    """Each group's CPU ms per image over a round (``ended threads``: the process's CPU not in
    a thread alive at its end, less what threads alive at its start but ended had already used);
    ``children``: CPU seconds of the server's child processes over the round, by group."""
    groups = {k for k in before.keys() | after.keys() if k != "process"}
    live = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in groups}
    total = after["process"] - before["process"]
    rows = {k: v * 1000 / images for k, v in live.items() if abs(v) > 0}
    rows["ended threads"] = (total - sum(live.values())) * 1000 / images
    rows.update({k: v * 1000 / images for k, v in children.items()})
    rows["total"] = (total + sum(children.values())) * 1000 / images
    return rows


def child_group(cmdline: str) -> str:
    """The group a child process of the server belongs to, by its command line."""
    if "redis-server" in cmdline:
        return "redis-server"
    if "worker.processes" in cmdline:
        return "stylize processes"
    return "other processes"


def children_cpu(server_pid: int) -> dict[str, float]:
    """CPU seconds so far of the server's child processes (its private redis-server, its
    stylize processes), by ``child_group``."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{server_pid}/task").glob("*"):
        try:
            pids = [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
        for pid in pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            key = child_group(cmdline)
            out[key] = out.get(key, 0.0) + (cpu_seconds(pid) or 0.0)
    return out


def redis_socket(start_line: str) -> str | None:
    """The private redis-server's Unix socket, from the server's start line (None: another backend)."""
    found = re.search(r"private redis-server \S+ on (/\S+?)[,)]", start_line)
    return found.group(1) if found else None


def command_counts(socket_path: str) -> dict[str, int]:
    """Calls so far of each Redis command of the server at ``socket_path``, lower-case names."""
    import redis

    with redis.Redis(unix_socket_path=socket_path) as client:
        return command_calls(client)


def command_calls(client: Any) -> dict[str, int]:
    """Calls so far of each Redis command (``INFO commandstats``) of ``client``'s server."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def commands_per_image(before: dict[str, int], after: dict[str, int], images: int) -> dict[str, float]:
    """Each command's calls per image over a round, the most frequent first, and their total
    (the benchmark's own ``INFO`` calls left out)."""
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    calls.pop("info", None)
    rows = {k: v / images for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v > 0}
    rows["total"] = sum(rows.values())
    return rows


def generator_label(real: bool) -> tuple[str, str]:
    """What ran as the generator: its JSON label, and the phrase the printed table uses."""
    if real:
        return "real", "the real generator"
    return "null (a copy of its input)", "the generator replaced by a copy of its input"


ORDER = (
    "event loop", "stylize threads", "thread pool", "native threads", "ended threads", "other worker threads",
    "other Python threads", "stylize processes", "other processes", "redis-server", "total",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="side of the square JPEG posted")
    p.add_argument("--style", type=shipped_style, default="starry-night")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each round")
    p.add_argument("--rounds", type=positive_int, default=3)
    p.add_argument("--generator", action="store_true", help="keep the real generator (default: a copy)")
    p.add_argument(
        "--env", action="append", type=key_value, default=[], metavar="KEY=VALUE", help="extra server environment"
    )
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "service-cost.json")
    p.add_argument("--launch", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # child mode
    args = p.parse_args(argv)
    if args.launch is not None:
        return launch(args.launch)

    extra = dict(args.env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    body = multipart({"style": args.style, "max_size": str(args.size), "format": "jpeg"}, jpeg(args.size))
    started = dt.datetime.now(dt.UTC)
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as server_log:
        fifo = str(Path(tmp) / "snapshots.fifo")
        os.mkfifo(fifo)
        site = Path(tmp) / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        env = {FIFO_ENV: fifo, NULL_ENV: "0" if args.generator else "1", "PYTHONPATH": path, **extra}
        launcher = [sys.executable, str(Path(__file__).resolve()), "--launch"]
        server = start_server(port, args.style, env, server_log, launcher=launcher)
        try:
            socket_path = redis_socket(banner(server_log))
            for _ in range(5):  # warm-up: model loaded, caches hot
                stylize(base, body)
            throughput(base, body, args.clients, min(5.0, args.seconds))  # and every thread's too
            for r in range(args.rounds):
                calls0 = command_counts(socket_path) if socket_path else {}
                before, children0 = request_snapshot(fifo, Path(tmp), 2 * r), children_cpu(server.pid)
                run = throughput(base, body, args.clients, args.seconds)
                after, children1 = request_snapshot(fifo, Path(tmp), 2 * r + 1), children_cpu(server.pid)
                calls1 = command_counts(socket_path) if socket_path else {}
                images = max(1, run["images"])
                spent = {k: v - children0.get(k, 0.0) for k, v in children1.items()}
                cost = per_image(before, after, images, spent)
                commands = commands_per_image(calls0, calls1, images) if socket_path else {}
                rounds.append({
                    "images_per_s": run["images_per_s"], "images": run["images"], "errors": run["errors"],
                    "median_model_ms": run["median_model_ms"],
                    "cpu_ms_per_image": {k: round(v, 3) for k, v in cost.items()},
                    "redis_commands_per_image": {k: round(v, 2) for k, v in commands.items() if round(v, 2) > 0},
                })  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=30)
    keys = [k for k in ORDER if any(k in r["cpu_ms_per_image"] for r in rounds)]
    keys += sorted({k for r in rounds for k in r["cpu_ms_per_image"]} - set(keys))
    summary = {
        k: {
            "median": round(statistics.median(r["cpu_ms_per_image"].get(k, 0.0) for r in rounds), 3),
            "min": round(min(r["cpu_ms_per_image"].get(k, 0.0) for r in rounds), 3),
            "max": round(max(r["cpu_ms_per_image"].get(k, 0.0) for r in rounds), 3),
        }
        for k in keys
    }
    by_round = [r["redis_commands_per_image"] for r in rounds if r["redis_commands_per_image"]]
    names = {k for c in by_round for k in c}
    medians = {k: round(statistics.median(c.get(k, 0.0) for c in by_round), 2) for k in names}
    commands_median = {
        k: medians[k] for k in sorted(names, key=lambda k: (k != "total", -medians[k])) if medians[k] > 0
    }
    result = {
        "benchmark": "service_cost",
        "command": "python benchmarks/service_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": started.isoformat(timespec="seconds"),
        "generator": generator_label(args.generator)[0],
        "size": args.size,
        "style": args.style,
        "clients": args.clients,
        "seconds": args.seconds,
        "server_env": extra,
        "cores": os.cpu_count(),
        "cpu_ms_per_image": summary,
        "redis_commands_per_image": commands_median,
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    what = generator_label(args.generator)[1]
    rates = ", ".join(f"{r['images_per_s']:.1f}" for r in rounds)
    print(f"{args.size}² JPEG in/out, {args.clients} clients, {what}; images/s by round: {rates}\n")
    print("| CPU ms per image | median | range over rounds |")
    print("|---|---|---|")
    for k in keys:
        s = summary[k]
        name = f"**{k}**" if k == "total" else k
        print(f"| {name} | {s['median']:.2f} | {s['min']:.2f}-{s['max']:.2f} |")
    if commands_median:
        top = ", ".join(f"{k.upper()} {v:.1f}" for k, v in list(commands_median.items())[1:9])
        print(f"\nRedis commands per image (median): {commands_median['total']:.1f}; {top}")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
