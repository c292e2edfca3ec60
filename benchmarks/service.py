"""Service benchmark: what the HTTP service adds on top of the generator's own time.

    python benchmarks/service.py                      # 512² JPEG in, JPEG out, embedded mode
    python benchmarks/service.py --clients 1,8,16 --seconds 30
    python benchmarks/service.py --size 4000 --max-size 1024 --clients ""   # a large upload, downscaled

Starts ``instyle serve`` in embedded mode (API + embedded Redis + ``INSTYLE_STYLIZE_THREADS``
stylize workers, processes on a CPU unless ``--env INSTYLE_STYLIZE_PROCESSES=false``, from
``--env`` or the worker settings' default) on a free port, then:

1. **latency**: ``--requests`` sequential ``POST /v1/stylize?wait=30`` of a ``--size``² JPEG
   (512) with ``max_size`` ``--max-size`` (the same, unless a large upload is downscaled). Each
   response's ``Server-Timing: model;dur=`` is the generator's own time; the rest of the
   round trip (upload, validation, queueing, decode, resize, encode, download) is the
   service's overhead.
2. **throughput**: for each ``--clients`` count, that many clients post back to back for
   ``--seconds``; images/s is compared with the model-bound limit: the **generator alone**,
   measured first in a separate process on the same cores (the style loaded as the worker
   loads it, the photo decoded once, as many threads as the server has stylize workers, each
   running the worker's model step back to back for ``--seconds``: the engine's
   ``forward_bytes``, decoded pixels to pixels, as ``stylize_batch`` runs it; with torch's
   threads split among them, and, when the server runs processes, also as that many processes
   of one thread each: the limit is the fastest way). Also reported: the bound implied by
   the server's own model times under that load (stylize threads x 1000 / median model ms),
   which is lower, since the service's work slows the generator down too. And the CPU time per
   image delivered: the server's (from /proc, all its threads, its stylize processes and its
   private redis-server)
   against the generator alone's. The difference is the service's own work per image plus
   what the generator's threads lose (spinning, waiting) to sharing the cores with it; the
   clients' CPU is apart.

``--rounds N`` repeats the throughput runs N times with the generator alone measured between
them (the server idle), each round compared with the measurements on either side of it, and
prints the median ratio: on a host whose speed drifts by 5-10 % within minutes, one limit
measured before and after a long run is a poor reference for all of it.

Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.options import key_value, positive_int, shipped_style  # noqa: E402 -- the repo on the path first

PHOTO = REPO / "instyle" / "assets" / "photos" / "skimage_astronaut.jpg"
BOUNDARY = "instyle-bench-boundary"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jpeg(size: int) -> bytes:
    from PIL import Image

    with Image.open(PHOTO) as img:
        buf = io.BytesIO()
        img.convert("RGB").resize((size, size)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def multipart(fields: dict[str, str], image: bytes) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="photo.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + image
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return b"".join(parts)


def stylize(base: str, body: bytes) -> tuple[float, float]:
    """One synchronous request: (round trip s, model s from Server-Timing)."""
    req = urllib.request.Request(
        f"{base}/v1/stylize?wait=30", data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )  # fmt: skip
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}")
        timing = r.headers.get("Server-Timing", "model;dur=nan")
    elapsed = time.perf_counter() - start
    return elapsed, float(timing.split("dur=")[1]) / 1000


def start_server(
    port: int, style: str, env_extra: dict[str, str], log: IO[bytes], launcher: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """``instyle serve`` on ``port``, its stderr to ``log``; returns once /readyz answers 200.
    ``launcher``: the command that stands for ``instyle`` (default: the venv's)."""
    env = {**os.environ, "INSTYLE_WARM_STYLES": style, **env_extra}
    env.pop("INSTYLE_REDIS_URL", None)
    instyle = launcher or [str(Path(sys.executable).with_name("instyle"))]
    cmd = [*instyle, "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"instyle serve exited with {proc.returncode}")
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("instyle serve did not become ready in 120 s")


def server_settings(extra: dict[str, str]) -> WorkerSettings:
    """The worker settings the server runs with: this environment's, with ``--env`` on top."""
    from worker.settings import WorkerSettings

    prefix = "INSTYLE_"
    overrides: dict[str, Any] = {
        k[len(prefix) :].lower(): v
        for k, v in extra.items()
        if k.startswith(prefix) and k[len(prefix) :].lower() in WorkerSettings.model_fields
    }
    return WorkerSettings(**overrides)


def stylize_threads(extra: dict[str, str]) -> int:
    """The server's stylize worker threads."""
    return server_settings(extra).stylize_threads


def generator_alone(
    size: int, style: str, threads: int, seconds: float, extra: dict[str, str], split: bool = False
) -> tuple[float, float]:
    """(images/s, CPU ms per image) of the generator alone: ``threads`` threads back to back, in a
    fresh process set up as ``instyle serve`` sets itself up (huge pages, malloc tuning, the
    worker's settings). ``split``: each thread runs on its share of torch's threads, as the
    server's stylize threads do when all of them are busy (``worker.runner.ThreadShare``)."""
    env = {**os.environ, **extra}
    env.pop("INSTYLE_REDIS_URL", None)
    cmd = [sys.executable, __file__, "--generator-alone", "--size", str(size), "--style", style]
    cmd += ["--threads", str(threads), "--seconds", str(seconds)] + (["--split"] if split else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 300, check=True)
    rate, cpu_ms = proc.stdout.strip().splitlines()[-1].split()
    return float(rate), float(cpu_ms)


#: The way of running the generator alone that stands for the embedded mode's stylize processes.
PROCESSES_WAY = "one process each, torch threads split"


def generator_alone_processes(
    size: int, style: str, processes: int, seconds: float, extra: dict[str, str]
) -> tuple[float, float]:
    """(images/s, CPU ms per image) of the generator alone in ``processes`` processes at once,
    one thread each running back to back on its share of the cores (as the embedded mode's
    stylize processes run when all are busy, ``worker.processes``), measuring over the same
    seconds."""
    env = {**os.environ, **extra, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}
    env.pop("INSTYLE_REDIS_URL", None)
    cmd = [sys.executable, __file__, "--generator-alone", "--size", str(size), "--style", style]
    cmd += ["--threads", "1", "--seconds", str(seconds), "--together"]
    children = [
        subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    for child in children:  # each says when it is warm, then waits for the word to start
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the generator alone did not start")
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    results = []
    for child in children:
        out, _ = child.communicate(timeout=seconds + 300)
        if child.returncode:
            raise RuntimeError(f"the generator alone exited with {child.returncode}")
        rate, cpu_ms = out.strip().splitlines()[-1].split()
        results.append((float(rate), float(cpu_ms)))
    total = sum(rate for rate, _ in results)
    return total, sum(rate * cpu for rate, cpu in results) / total


def served_kind(banner_line: str) -> str:
    """What the server's banner says its stylize workers are: "processes" or "threads" (a
    single process runs too, which the settings alone do not tell: it needs a CPU and a
    private redis-server)."""
    found = re.search(r"\d+ stylize (processes|threads)", banner_line)
    return found.group(1) if found else "workers"


def shares_threads(extra: dict[str, str]) -> bool:
    """Whether the server's stylize threads split torch's threads when busy together."""
    settings = server_settings(extra)
    return settings.share_threads and settings.stylize_threads > 1


def banner(log: IO[bytes]) -> str:
    """The server's start line, e.g. ``instyle (embedded mode, private redis-server 7.0.15 on ...)``."""
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()
    return next((line.strip() for line in lines if line.startswith("instyle (")), "")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds so far of process ``pid`` (all its threads) and of its live
    child processes (embedded mode's private redis-server), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children.update(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total + sum(cpu_seconds(child) or 0.0 for child in children)


def _generator_alone_child(
    size: int, style: str, threads: int, seconds: float, split: bool, together: bool = False
) -> tuple[float, float]:
    from stylenet.config import set_openmp_threads, tune_malloc, use_huge_pages

    use_huge_pages()
    tune_malloc()
    import fakeredis
    import torch

    from stylenet.imageio import image_bytes, image_to_tensor, load_image
    from stylenet.inference import bytes_pass, run_generator
    from worker.context import build_context, in_passing_thread
    from worker.settings import WorkerSettings

    # as the server: loaded off the main thread (worker.context.in_passing_thread), no torch on it
    ctx = build_context(WorkerSettings(warm_styles=[style]), fakeredis.FakeRedis())
    generator, _ = ctx.cache.get(style)
    photo = load_image(jpeg(size))
    inputs: list[torch.Tensor] = []
    in_passing_thread(lambda: inputs.append(image_to_tensor(photo).unsqueeze(0).to(ctx.device)))
    x, pixels = inputs[0], image_bytes(photo)[None]
    run_bytes = bytes_pass(generator, size * size, ctx.tile_pixels)  # the worker's model step, if bytes
    counts = [0] * threads
    share = max(1, torch.get_num_threads() // threads) if split else torch.get_num_threads()

    def loop(k: int, stop_at: float) -> None:
        set_openmp_threads(share)
        with torch.inference_mode():
            while time.perf_counter() < stop_at:
                if run_bytes is not None:
                    run_bytes(pixels, None)
                else:
                    run_generator(generator, x, ctx.tile_pixels)
                counts[k] += 1

    in_passing_thread(loop, 0, time.perf_counter() + 1.0)  # warm-up
    counts[0] = 0
    if together:  # beside other such processes: all measure over the same seconds
        print("ready", flush=True)
        sys.stdin.readline()
    stop_at = time.perf_counter() + seconds
    workers = [threading.Thread(target=loop, args=(k, stop_at)) for k in range(threads)]
    cpu0, start = time.process_time(), time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    images = max(1, sum(counts))
    return sum(counts) / (time.perf_counter() - start), (time.process_time() - cpu0) * 1000 / images


def throughput(
    base: str, body: bytes, clients: int, seconds: float, workers: int = 1, server_pid: int | None = None
) -> dict[str, Any]:
    done: list[tuple[float, float]] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop_at:
            try:
                result = stylize(base, body)
            except (OSError, RuntimeError) as exc:
                with lock:
                    errors.append(str(exc))
                continue
            with lock:
                done.append(result)

    start = time.perf_counter()
    cpu0 = cpu_seconds(server_pid) if server_pid else None
    own0 = time.process_time()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu1 = cpu_seconds(server_pid) if server_pid else None
    server_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    per_image = 1000 / max(1, len(done))
    model = statistics.median(m for _, m in done) if done else float("nan")
    return {
        # CPU time per image delivered: the whole server process, and the load generator itself
        "server_cpu_ms_per_image": round(server_cpu * per_image, 1) if server_cpu is not None else None,
        "clients_cpu_ms_per_image": round((time.process_time() - own0) * per_image, 2),
        "clients": clients,
        "images": len(done),
        "errors": len(errors),
        "wall_s": round(wall, 2),
        "images_per_s": round(len(done) / wall, 3),
        "median_model_ms": round(model * 1000, 2),
        "model_bound_images_per_s": round(workers / model, 3) if done else None,
        "median_latency_ms": round(statistics.median(e for e, _ in done) * 1000, 1) if done else None,
    }


def _mean_alone(alone_runs: list[dict[str, tuple[float, float]]], name: str) -> tuple[float, float]:
    """One way of running the generator alone, averaged over its measurements: (images/s, CPU ms)."""
    return (
        statistics.fmean(run[name][0] for run in alone_runs),
        statistics.fmean(run[name][1] for run in alone_runs),
    )


def round_limits(alone_runs: list[dict[str, tuple[float, float]]]) -> list[float]:
    """The model-bound limit of each round: the best way of running the generator alone, each
    way averaged over the two measurements on either side of the round (``alone_runs`` holds
    one more measurement than there are rounds)."""
    return [
        max((alone_runs[r][name][0] + alone_runs[r + 1][name][0]) / 2 for name in alone_runs[r])
        for r in range(len(alone_runs) - 1)
    ]


def median_ratio(runs: list[dict[str, Any]], clients: int) -> float:
    """The median over rounds of images/s to the round's limit, for ``clients`` clients."""
    return statistics.median(run["ratio"] for run in runs if run["clients"] == clients)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="side of the square JPEG posted")
    p.add_argument("--max-size", type=int, help="the max_size posted (default: --size); the output's side")
    p.add_argument("--style", type=shipped_style, default="starry-night")
    p.add_argument("--requests", type=positive_int, default=30, help="sequential requests for the latency part")
    p.add_argument("--clients", default="8,16", help="concurrent client counts for the throughput part")
    p.add_argument("--seconds", type=float, default=20.0, help="duration of each throughput run")
    p.add_argument(
        "--env", action="append", type=key_value, default=[], metavar="KEY=VALUE", help="extra server environment"
    )
    p.add_argument(
        "--rounds", type=positive_int, default=1,
        help="throughput rounds, the generator alone measured before, between and after them; each round's ratio "
        "is to the mean of the measurements on either side of it",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "service-cpu.json")
    p.add_argument("--generator-alone", action="store_true", help=argparse.SUPPRESS)  # child mode
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--split", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--together", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.generator_alone:
        print(*_generator_alone_child(args.size, args.style, args.threads, args.seconds, args.split, args.together))
        return 0

    port = free_port()
    out_size = min(args.size, args.max_size or args.size)  # what the generator runs at
    extra = dict(args.env)
    threads = stylize_threads(extra)
    # the model-bound limit: the generator alone in each way the server may run it (the best
    # one), measured before the server's runs, between rounds (the server idle) and after;
    # each round is compared with the mean of the measurements on either side of it, since
    # this machine's speed drifts
    ways = {"all torch threads each": False}
    if shares_threads(extra):
        ways["torch threads split"] = True
    in_processes = server_settings(extra).stylize_processes and threads > 1
    if in_processes:
        ways[PROCESSES_WAY] = True

    def measure_alone() -> dict[str, tuple[float, float]]:
        return {
            name: generator_alone_processes(out_size, args.style, threads, args.seconds, extra)
            if name == PROCESSES_WAY
            else generator_alone(out_size, args.style, threads, args.seconds, extra, split)
            for name, split in ways.items()
        }

    alone_runs = [measure_alone()]
    base = f"http://127.0.0.1:{port}"
    body = multipart({"style": args.style, "max_size": str(out_size), "format": "jpeg"}, jpeg(args.size))
    started = dt.datetime.now(dt.UTC)
    clients = [int(c) for c in args.clients.split(",") if c]
    rounds: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryFile() as server_log:  # its start line names the Redis backend (banner())
        server = start_server(port, args.style, extra, server_log)
        try:
            for _ in range(3):  # warm-up: model loaded, caches hot
                stylize(base, body)
            samples = [stylize(base, body) for _ in range(args.requests)]
            for r in range(args.rounds):
                if r:
                    alone_runs.append(measure_alone())
                rounds.append([throughput(base, body, c, args.seconds, threads, server.pid) for c in clients])
            start_line = banner(server_log)
        finally:
            server.terminate()
            server.wait(timeout=30)
    alone_runs.append(measure_alone())
    before, after = alone_runs[0], alone_runs[-1]
    configs = {name: _mean_alone(alone_runs, name) for name in ways}
    best = max(configs, key=lambda name: configs[name][0])
    alone, alone_cpu_ms = configs[best]
    limits = round_limits(alone_runs)
    for r, runs_r in enumerate(rounds):
        for run in runs_r:
            run["round"] = r + 1
            run["generator_alone_images_per_s"] = round(limits[r], 3)
            run["ratio"] = round(run["images_per_s"] / limits[r], 4)
    runs = [run for runs_r in rounds for run in runs_r]
    overheads = sorted((e - m) * 1000 for e, m in samples)
    latency = {
        "requests": len(samples),
        "median_round_trip_ms": round(statistics.median(e for e, _ in samples) * 1000, 2),
        "median_model_ms": round(statistics.median(m for _, m in samples) * 1000, 2),
        "median_overhead_ms": round(statistics.median(overheads), 2),
        "p90_overhead_ms": round(overheads[int(0.9 * (len(overheads) - 1))], 2),
    }
    result = {
        "benchmark": "service",
        "command": "python benchmarks/service.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": started.isoformat(timespec="seconds"),
        "mode": f"embedded ({threads} stylize worker {served_kind(start_line)})",
        "server_banner": start_line,
        "stylize_threads": threads,
        "size": args.size,
        "max_size": out_size,
        "style": args.style,
        "server_env": extra,
        "cores": os.cpu_count(),
        "latency": latency,
        "generator_alone_images_per_s": round(alone, 3),
        "generator_alone_cpu_ms_per_image": round(alone_cpu_ms, 1),
        "generator_alone_configs": {
            name: {
                "images_per_s": round(configs[name][0], 3),
                "cpu_ms_per_image": round(configs[name][1], 1),
                "images_per_s_before_after": [round(before[name][0], 3), round(after[name][0], 3)],
                "images_per_s_measured": [round(run[name][0], 3) for run in alone_runs],
            }
            for name in ways
        },
        "generator_alone_best": best,
        "rounds": args.rounds,
        "median_ratio_by_clients": {str(c): round(median_ratio(runs, c), 4) for c in clients},
        "throughput": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    found = re.search(r"embedded mode, (.+?)(?: on /[^,)\s]+)?[,)]", start_line)
    backend = f", Redis: {found.group(1)}" if found else ""
    mode = f"embedded mode{backend}, {threads} stylize {served_kind(start_line)}, {os.cpu_count()} cores"
    sizes = f"{args.size}² JPEG in/out" if out_size == args.size else f"{args.size}² JPEG in, {out_size}² out"
    print(f"{sizes}, style {args.style}, {mode}\n")
    print("| round trip ms (median) | model ms (median) | overhead ms (median) | overhead ms (p90) |")
    print("|---|---|---|---|")
    print(
        f"| {latency['median_round_trip_ms']:.1f} | {latency['median_model_ms']:.1f} "
        f"| {latency['median_overhead_ms']:.1f} | {latency['p90_overhead_ms']:.1f} |\n"
    )
    for name, (rate, cpu) in configs.items():
        mark = " (the limit)" if name == best and len(configs) > 1 else ""
        between = ", ".join(f"{run[name][0]:.2f}" for run in alone_runs[1:-1])
        when = [f"{before[name][0]:.2f} before the server"] + ([f"{between} between rounds"] if between else [])
        print(
            f"generator alone, {threads} {'processes' if name == PROCESSES_WAY else 'thread(s)'} back to back, "
            f"{name}: {rate:.2f} images/s "
            f"({', '.join([*when, f'{after[name][0]:.2f} after'])}), {cpu:.0f} ms of CPU per image{mark}"
        )
    print()
    round_column = "| round " if args.rounds > 1 else ""
    columns = (
        "clients", "images/s", "ratio to the generator alone", "bound from in-service model times", "ratio to it",
        "median latency ms", "errors", "server CPU ms per image (beyond the generator alone)",
    )  # fmt: skip
    print(f"{round_column}| " + " | ".join(columns) + " |")
    print("|---" * (8 + (args.rounds > 1)) + "|")
    for row in runs:
        bound = row["model_bound_images_per_s"] or float("nan")
        cpu = row["server_cpu_ms_per_image"]
        cpu_text = f"{cpu:.0f} ({cpu - alone_cpu_ms:+.0f})" if cpu is not None else "n/a"
        print(
            (f"| {row['round']} " if args.rounds > 1 else "")
            + f"| {row['clients']} | {row['images_per_s']:.2f} | {row['ratio']:.0%} | {bound:.2f} "
            f"| {row['images_per_s'] / bound:.0%} | {row['median_latency_ms']} | {row['errors']} | {cpu_text} |"
        )
    if args.rounds > 1:
        medians = ", ".join(f"{c} clients {median_ratio(runs, c):.0%}" for c in clients)
        print(f"\nmedian ratio to the generator alone over {args.rounds} rounds: {medians}")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
