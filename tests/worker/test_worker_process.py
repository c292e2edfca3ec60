"""A real `instyle worker` process: runs jobs, survives failing ones, finishes its job on SIGTERM."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from redis import Redis

from service.jobs import JobService
from service.settings import ServiceSettings


@pytest.mark.slow
def test_sigterm_finishes_the_current_job_then_exits(redis_url: str, tiny_store: Path, tmp_path: Path) -> None:
    jobs = JobService(Redis.from_url(redis_url), ServiceSettings(redis_url=redis_url, store=tiny_store))
    buf = io.BytesIO()
    Image.effect_noise((1800, 1800), 40).convert("RGB").save(buf, "PNG", compress_level=1)
    slow = jobs.enqueue_stylize(buf.getvalue(), "tiny@1", 1800, "png", 90, False)
    bad = jobs.enqueue_stylize(b"not an image at all", "tiny@1", 64, "jpeg", 90, False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTYLE_")}
    env |= {"INSTYLE_REDIS_URL": redis_url, "INSTYLE_STORE": str(tiny_store)}
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "instyle.cli", "worker", "--queues", "stylize", "--device", "cpu"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while jobs.status(slow).value == "queued" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert jobs.status(slow).value == "started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert jobs.status(slow).value == "finished"
    data, ctype, model_ms = jobs.result(slow)
    assert ctype == "image/png" and len(data) > 1000 and model_ms is not None and model_ms > 0
    assert jobs.status(bad).value == "queued"  # left for the next worker, not lost

    # a fresh worker in burst mode takes the bad job, fails it with a reason, and carries on
    done = subprocess.run(
        [sys.executable, "-m", "instyle.cli", "worker", "--queues", "stylize", "--burst", "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    view = jobs.view(bad, None)
    assert view.status.value == "failed" and view.error is not None and view.error.code == "invalid_image"
