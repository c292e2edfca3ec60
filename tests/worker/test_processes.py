"""The embedded mode's stylize workers as processes (``worker.processes``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from instyle.client import submit
from stylenet import inference
from tests.conftest import ASSET_PHOTOS, free_port
from tests.e2e.conftest import serve_embedded
from worker.processes import (
    EXCLUSIVE_FILE,
    PASSES_FILE,
    SPIN_COUNT,
    FileLock,
    ProcessShare,
    child_env,
    clear_slot,
    create_share_files,
)


def test_children_spin_briefly_unless_told_otherwise() -> None:
    env = child_env({"PATH": "/bin"}, "unix:///x/redis.sock")
    assert env == {"PATH": "/bin", "INSTYLE_REDIS_URL": "unix:///x/redis.sock", "GOMP_SPINCOUNT": str(SPIN_COUNT)}
    assert child_env({"GOMP_SPINCOUNT": "5"}, "u")["GOMP_SPINCOUNT"] == "5"
    assert "GOMP_SPINCOUNT" not in child_env({"OMP_WAIT_POLICY": "passive"}, "u")


def test_passes_split_the_threads_across_processes(tmp_path: Path) -> None:
    create_share_files(tmp_path, 2)
    first, second = ProcessShare(4, tmp_path, 0), ProcessShare(4, tmp_path, 1)
    with first.claim() as alone:
        assert alone == 4  # a pass alone takes every thread
        with second.claim() as beside:
            assert beside == 2  # a second process's pass, started beside it, half
    with second.claim() as after:
        assert after == 4  # both let go of their slots
    assert (tmp_path / PASSES_FILE).read_bytes() == b"\0\0"


def test_a_dead_process_slot_is_cleared(tmp_path: Path) -> None:
    create_share_files(tmp_path, 2)
    (tmp_path / PASSES_FILE).write_bytes(b"\1\0")  # process 0 died in the middle of a pass
    share = ProcessShare(2, tmp_path, 1)
    with share.claim() as threads:
        assert threads == 1
    open_files = len(os.listdir("/proc/self/fd"))
    clear_slot(tmp_path, 0)
    assert len(os.listdir("/proc/self/fd")) == open_files  # the server calls it on every restart
    with share.claim() as threads:
        assert threads == 2


def test_a_slot_outside_the_map_is_refused(tmp_path: Path) -> None:
    create_share_files(tmp_path, 2)
    with pytest.raises(ValueError, match="slot 2"):
        ProcessShare(2, tmp_path, 2)


HOLD = """
import sys, time
from pathlib import Path
from worker.processes import FileLock
with FileLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_the_large_pass_lock_is_shared_by_processes(tmp_path: Path) -> None:
    path = tmp_path / EXCLUSIVE_FILE
    with _holder(path, 1.0):  # waits for it at the end
        start = time.monotonic()
        with FileLock(path):
            waited = time.monotonic() - start
    assert waited > 0.5  # it waited for the other process to let go


def test_the_large_pass_lock_is_released_when_its_holder_dies(tmp_path: Path) -> None:
    path = tmp_path / EXCLUSIVE_FILE
    with _holder(path, 60.0) as holder:
        holder.send_signal(signal.SIGKILL)  # an out-of-memory kill in the middle of a large pass
    start = time.monotonic()
    with FileLock(path):
        assert time.monotonic() - start < 5


def test_large_passes_take_the_shared_lock(tmp_path: Path) -> None:
    taken: list[str] = []

    class Recording:
        def __enter__(self) -> None:
            taken.append("enter")

        def __exit__(self, *exc: object) -> None:
            taken.append("exit")

    kept = inference._exclusive
    try:
        inference.share_exclusive_lock(Recording())
        with inference._turn(inference.EXCLUSIVE_PIXELS):
            pass
        assert taken == []  # at the limit: runs beside the others
        with inference._turn(inference.EXCLUSIVE_PIXELS + 1):
            assert taken == ["enter"]
        assert taken == ["enter", "exit"]
    finally:
        inference.share_exclusive_lock(kept)


needs_redis_server = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def _stylize_pids(server_pid: int) -> list[int]:
    """The server's stylize worker processes."""
    pids = []
    for task in Path(f"/proc/{server_pid}/task").glob("*"):
        for pid in (task / "children").read_text().split():
            if b"worker.processes" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(int(pid))
    return sorted(pids)


@pytest.mark.slow
@needs_redis_server
def test_serve_restarts_a_lost_stylize_process(tiny_store: Path, tmp_path: Path) -> None:
    """`instyle serve` runs its stylize workers as processes; one killed is replaced, the
    service keeps stylizing, and stopping the server leaves none behind."""
    log = tmp_path / "serve.log"
    server: list[subprocess.Popen[bytes]] = []
    with serve_embedded(log, server.append, INSTYLE_STORE=str(tiny_store), INSTYLE_EMBEDDED_REDIS="server") as url:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as r:
            assert json.load(r)["checks"]["workers:stylize"]["count"] == 2
        assert "2 stylize processes" in log.read_text().splitlines()[0]
        children = _stylize_pids(server[0].pid)
        assert len(children) == 2
        os.kill(children[0], signal.SIGKILL)  # e.g. the kernel's out-of-memory killer
        deadline = time.monotonic() + 60
        while (now := _stylize_pids(server[0].pid)) and (len(now) < 2 or children[0] in now):
            if time.monotonic() > deadline:
                pytest.fail(f"no new stylize process: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        for _ in range(3):
            photo = ASSET_PHOTOS / "skimage_chelsea.jpg"
            _, content_type, job = submit(url, photo, {"style": "tiny", "max_size": "32"})
            assert content_type == "image/jpeg" and job["status"] == "finished"
        kept = _stylize_pids(server[0].pid)
    text = log.read_text()
    assert "stylize worker process" in text and "starting another" in text
    assert not any(Path(f"/proc/{pid}").exists() for pid in kept)  # stopped with the server
    assert "Traceback" not in text


@pytest.mark.slow
@needs_redis_server
def test_serve_stops_when_a_stylize_process_cannot_start(tiny_store: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTYLE_")}
    env |= {"INSTYLE_STORE": str(tiny_store), "INSTYLE_EMBEDDED_REDIS": "server", "INSTYLE_WARM_STYLES": "nope"}
    port = str(free_port())
    done = subprocess.run(
        [sys.executable, "-m", "instyle.cli", "serve", "--port", port], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "nope" in done.stderr and "cannot start" in done.stderr
    assert "instyle: error: a stylize worker process exited" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_dead_workers_job_is_settled_at_once(redis_url: str, tmp_path: Path) -> None:
    """The server saw a stylize process die: its job is failed as worker_lost there and then (it
    stayed "started" for its timeout + 60 s), and the dead worker stops counting for /readyz.
    Played with a live worker thread of this process standing for the dead child."""
    import threading

    from redis import Redis
    from rq import Queue, Worker
    from rq.job import JobStatus
    from rq.serializers import JSONSerializer

    from worker.processes import settle_dead_worker
    from worker.runner import ThreadWorker, make_worker

    redis = Redis.from_url(redis_url)
    queue = Queue("stylize", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.worker.test_runner.waits_for_a_file", str(tmp_path), job_timeout=600)
    worker = make_worker(redis, ["stylize"], ThreadWorker)
    thread = threading.Thread(target=worker.work, kwargs={"burst": True, "with_scheduler": False}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.02)
        assert settle_dead_worker(redis, os.getpid() + 1) == []  # another process's: untouched
        assert job.get_status() == JobStatus.STARTED
        assert settle_dead_worker(redis, os.getpid()) == [job.id]
        assert job.get_status() == JobStatus.FAILED
        latest = job.latest_result()
        assert latest is not None and "abandoned" in (latest.exc_string or "").lower()  # read as worker_lost
        assert redis.hget("instyle:telemetry:instyle_job_attempts_lost_total", 'type="stylize"') == b"1"
        assert worker.name not in [w.name for w in Worker.all(connection=redis)]
    finally:
        (tmp_path / "resume").touch()
        worker.stop()  # a thread worker waits for jobs in slices, burst or not
        thread.join(timeout=30)


@pytest.mark.slow
@needs_redis_server
def test_serve_stops_cleanly_while_a_style_trains(tiny_store: Path, tmp_path: Path, small_photos: Path) -> None:
    """SIGTERM while the embedded training thread runs: the training stops at its next iteration
    and the server exits 0 (torch still computing in that thread as the interpreter exited
    aborted it: "terminate called without an active exception", exit 134 or 139)."""
    from instyle import client
    from tests.conftest import ASSET_STYLE

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    log, server = tmp_path / "serve.log", []
    env = {"INSTYLE_STORE": str(store), "INSTYLE_TRAIN_DATA": str(small_photos), "INSTYLE_EMBEDDED_REDIS": "server"}
    with serve_embedded(log, server.append, **env) as url:
        fields = {"name": "long", "iterations": "5000", "image_size": "32", "style_size": "48", "width": "0.25"}
        queued: list[str] = []
        client.train(url, ASSET_STYLE, fields, on_queued=lambda u, _: queued.append(u), follow=False)
        deadline = time.monotonic() + 120
        while client.view(queued[0])["detail"].get("iteration", 0) < 2:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
    text = log.read_text()
    assert server[0].returncode == 0, text[-2000:]
    assert "the server stopped while it trained" in text and "terminate called" not in text
