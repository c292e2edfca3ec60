"""Training as a job, end to end: API + real Redis + real `instyle worker` subprocesses."""

from __future__ import annotations

import concurrent.futures
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import ServiceSettings
from tests.conftest import ASSET_STYLE

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TINY_RECIPE = {"iterations": "40", "image_size": "32", "style_size": "48", "batch_size": "1", "width": "0.25"}


@pytest.fixture
def store(tmp_path: Path, tiny_store: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(tiny_store, root)
    return root


@pytest.fixture
def api(redis_url: str, store: Path) -> Iterator[TestClient]:
    settings = ServiceSettings(redis_url=redis_url, store=store, api_keys=[KEY], train_retries=2)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def start_worker(
    redis_url: str, store: Path, small_photos: Path, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(*extra: str, **settings: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INSTYLE_")}
        env |= {
            "INSTYLE_REDIS_URL": redis_url, "INSTYLE_STORE": str(store), "INSTYLE_TRAIN_DATA": str(small_photos),
            "INSTYLE_TRAIN_LEASE_S": "3", "INSTYLE_MAINTENANCE_S": "1", "OMP_NUM_THREADS": "1", **settings,
        }  # fmt: skip
        log = (tmp_path / f"worker{len(procs)}.log").open("wb")
        logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "instyle.cli", "worker", "--device", "cpu", *queues(extra), *extra],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    for log in logs:
        log.close()


def queues(extra: tuple[str, ...]) -> tuple[str, ...]:
    return () if "--queues" in extra else ("--queues", "train,stylize")


def submit(api: TestClient, name: str, **fields: str) -> dict[str, Any]:
    with ASSET_STYLE.open("rb") as f:
        r = api.post(
            "/v1/styles", files={"style_image": ("s.jpg", f, "image/jpeg")}, data={"name": name, **fields}, headers=AUTH
        )
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def wait_for(
    api: TestClient, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 180
) -> list[dict[str, Any]]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        seen.append(job)
        if until(job):
            return seen
        time.sleep(0.1)
    pytest.fail(f"timed out; last state: {seen[-1] if seen else None}")


def test_auth_validation_and_clashes(api: TestClient) -> None:
    with ASSET_STYLE.open("rb") as f:
        files = {"style_image": ("s.jpg", f.read(), "image/jpeg")}
    r = api.post("/v1/styles", files=files, data={"name": "x"})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"  # RFC 9110 section 11.6.1
    r = api.post("/v1/styles", files=files, data={"name": "x"}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    refused = [("iterations", "0"), ("image_size", "8"), ("lr", "5"), ("arch", "unet"), ("batch_size", "x")]
    for field, value in [*refused, ("width", "nan"), ("lr", "inf")]:
        r = api.post("/v1/styles", files=files, data={"name": "x", field: value}, headers=AUTH)
        assert r.status_code == 422 and field in r.json()["detail"], (field, r.text)
        assert value not in ("nan", "inf") or "finite number" in r.json()["detail"], r.text
    r = api.post("/v1/styles", files=files, data={"name": "Not A Slug"}, headers=AUTH)
    assert r.status_code == 422 and "name" in r.json()["detail"]
    r = api.post("/v1/styles", files=files, data={"name": "tiny"}, headers=AUTH)
    assert r.status_code == 409 and r.json()["code"] == "style_exists"
    r = api.post("/v1/styles", files=files, data={"name": "tiny", "replace": "true"}, headers=AUTH)
    assert r.status_code == 202 and r.json()["style"] == "tiny"  # will publish tiny@2
    result = api.get(f"/v1/jobs/{r.json()['job_id']}/result")  # a style, not an image (was 410 "expired")
    assert result.status_code == 404 and result.json()["code"] == "no_such_image"
    r = api.post(
        "/v1/styles", files={"style_image": ("s.jpg", b"nope", "image/jpeg")}, data={"name": "y"}, headers=AUTH
    )
    assert r.status_code == 415
    for size in [(1, 1), (2000, 60)]:  # too small to train on once fitted to style_size (256 px: 2000x8)
        painting = io.BytesIO()
        Image.new("RGB", size).save(painting, "PNG")
        r = api.post(
            "/v1/styles", files={"style_image": ("s.png", painting.getvalue(), "image/png")}, data={"name": "y"},
            headers=AUTH,
        )  # fmt: skip
        assert r.status_code == 422 and "style_image" in r.json()["detail"], r.text
    assert api.delete("/v1/styles/tiny").status_code == 401
    assert api.delete("/v1/styles/tiny", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert api.delete("/v1/styles/missing", headers=AUTH).status_code == 404
    for bad in ["tiny@abc", "tiny@%C2%B2"]:  # once read as "every version of tiny"
        assert api.delete(f"/v1/styles/{bad}", headers=AUTH).status_code == 404
    assert api.get("/v1/styles/tiny").status_code == 200


def test_a_missing_key_is_refused_before_the_body_is_read(api: TestClient) -> None:
    """FastAPI parses a form before a route's dependencies run: an anonymous client could make
    the server take in and parse a 50 MB upload before its 401."""
    import asyncio

    from service.auth import KeyBeforeBody

    broken = b"--b\r\nnot a form at all"  # parsed first, this was a 400, not the 401
    r = api.post("/v1/styles", content=broken, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = api.post(
        "/v1/styles", content=broken,
        headers={"Content-Type": "multipart/form-data; boundary=b", "Authorization": "Bearer wrong"},
    )  # fmt: skip
    assert r.status_code == 403

    reached, sent = [], []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        reached.append(scope["path"])

    async def receive():  # type: ignore[no-untyped-def]
        raise AssertionError("the body was read")

    async def send(message):  # type: ignore[no-untyped-def]
        sent.append(message)

    guard = KeyBeforeBody(app, [KEY])
    app = api.app  # the routes that depend on the key are found in it
    for method, path in [("POST", "/v1/styles"), ("DELETE", "/v1/styles/tiny@2")]:
        asyncio.run(guard({"type": "http", "method": method, "path": path, "headers": [], "app": app}, receive, send))
    assert reached == [] and [m["status"] for m in sent if m["type"] == "http.response.start"] == [401, 401]
    for method, path in [("POST", "/v1/stylize"), ("GET", "/v1/styles"), ("DELETE", "/v1/jobs/x")]:
        asyncio.run(guard({"type": "http", "method": method, "path": path, "headers": [], "app": app}, receive, send))
    assert reached == ["/v1/stylize", "/v1/styles", "/v1/jobs/x"]  # not ours to check


def test_a_name_with_a_training_job_pending_is_taken(api: TestClient, redis_url: str, store: Path) -> None:
    """Two submissions of one new name: the second is a 409 while the first is queued or running
    (both would publish, the second a version 2 nobody asked for), unless it says ``replace``;
    once the first has ended the name is free again. Submissions at once: one wins."""
    first = submit(api, "dup", **TINY_RECIPE)
    with ASSET_STYLE.open("rb") as f:
        files = {"style_image": ("s.jpg", f.read(), "image/jpeg")}
    r = api.post("/v1/styles", files=files, data={"name": "dup", **TINY_RECIPE}, headers=AUTH)
    assert r.status_code == 409 and r.json()["code"] == "style_exists", r.text
    assert first["job_id"] in r.json()["detail"] and "replace=true" in r.json()["detail"]
    second = submit(api, "dup", replace="true", **TINY_RECIPE)  # asked for: a version after the first's
    for job in (first, second):
        assert api.delete(f"/v1/jobs/{job['job_id']}", headers=AUTH).status_code in (200, 202)
    submit(api, "dup", **TINY_RECIPE)  # both canceled: free again

    settings = ServiceSettings(redis_url=redis_url, store=store, api_keys=[KEY])
    with TestClient(create_app(settings)) as other:  # another API process on the same Redis
        barrier = threading.Barrier(2)

        def post(client: TestClient) -> int:
            barrier.wait()
            r = client.post("/v1/styles", files=files, data={"name": "race", **TINY_RECIPE}, headers=AUTH)
            return r.status_code

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            codes = sorted(pool.map(post, (api, other)))
    assert codes == [202, 409]


def test_the_training_queue_has_its_own_cap_and_no_preview_before_the_first(redis_url: str, store: Path) -> None:
    settings = ServiceSettings(redis_url=redis_url, store=store, api_keys=[KEY], max_train_queue_depth=1)
    with TestClient(create_app(settings)) as api:
        queued = submit(api, "first", **TINY_RECIPE)
        r = api.get(f"/v1/jobs/{queued['job_id']}/preview")  # no worker has sampled it yet
        assert r.status_code == 404 and r.json()["code"] == "preview_not_ready", r.text
        with ASSET_STYLE.open("rb") as f:
            files = {"style_image": ("s.jpg", f.read(), "image/jpeg")}
        r = api.post("/v1/styles", files=files, data={"name": "second"}, headers=AUTH)
        assert r.status_code == 429 and r.json()["code"] == "queue_full", r.text
        assert int(r.headers["retry-after"]) == 60 and "1 training jobs are waiting" in r.json()["detail"]
        photo = io.BytesIO()
        Image.new("RGB", (16, 16)).save(photo, "PNG")
        stylize = api.post("/v1/stylize", files={"image": ("p.png", photo.getvalue())}, data={"style": "tiny"})
        assert stylize.status_code == 202, stylize.text  # the stylize queue is not the training queue


@pytest.mark.slow
def test_train_watch_publish_stylize(api: TestClient, start_worker: Callable[..., subprocess.Popen[bytes]]) -> None:
    stylizer = start_worker("--queues", "stylize")  # running before the style exists
    accepted = submit(api, "fresh", title="Fresh", **TINY_RECIPE)
    assert accepted["recipe"]["iterations"] == 40 and accepted["generator"]["width"] == 0.25
    worker = start_worker("--queues", "train", "--burst")
    seen = wait_for(api, accepted["job_id"], lambda j: j["status"] in ("finished", "failed"))
    final = seen[-1]
    assert final["status"] == "finished", final
    # one attempt: the lease outlived loading, evaluation and export (each longer than 3 s here)
    assert final["detail"]["attempts"] == 1
    assert final["detail"]["style"] == "fresh@1" and "published" not in final["detail"]  # (the worker's bookkeeping)
    iterations = [j["detail"]["iteration"] for j in seen if j["status"] == "started" and j["detail"]["iteration"] > 0]
    assert len(set(iterations)) >= 2 and iterations == sorted(iterations)  # progress increased while we watched
    running = next(j for j in seen if j["status"] == "started" and "losses" in j["detail"])
    assert {"it_per_s", "eta_s", "total"} <= set(running["detail"]) and running["detail"]["total"] == 40
    assert set(running["detail"]["losses"]) == {"total", "content", "style", "tv"}
    assert final["preview_url"] and api.get(final["preview_url"]).headers["content-type"] == "image/jpeg"
    assert worker.wait(timeout=60) == 0
    styles = {s["id"]: s for s in api.get("/v1/styles").json()}
    assert styles["fresh"]["version"] == 1 and not styles["fresh"]["shipped"]
    # the stylize worker that was running all along uses it, without a restart
    photo = {"image": ("a.jpg", ASSET_STYLE.read_bytes(), "image/jpeg")}
    job_id = api.post("/v1/stylize", files=photo, data={"style": "fresh", "max_size": "40"}).json()["job_id"]
    done = wait_for(api, job_id, lambda j: j["status"] in ("finished", "failed"), timeout=60)[-1]
    assert done["status"] == "finished" and stylizer.poll() is None
    assert api.delete("/v1/styles/fresh", headers=AUTH).status_code == 204
    assert "fresh" not in {s["id"] for s in api.get("/v1/styles").json()}


@pytest.mark.slow
def test_sigkill_mid_training_resumes_from_the_checkpoint(
    api: TestClient, start_worker: Callable[..., subprocess.Popen[bytes]], store: Path
) -> None:
    accepted = submit(api, "survivor", **{**TINY_RECIPE, "iterations": "200"})
    job_id = accepted["job_id"]
    first = start_worker()
    wait_for(api, job_id, lambda j: j["detail"].get("iteration", 0) >= 40)  # checkpoints every 10 iterations
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = api.get(f"/v1/jobs/{job_id}").json()["detail"]["iteration"]
    # the lease runs out (3 s); reading the job retries it
    wait_for(api, job_id, lambda j: j["status"] == "queued", timeout=60)
    second = start_worker("--burst")
    seen = wait_for(api, job_id, lambda j: j["status"] in ("finished", "failed"), timeout=240)
    assert seen[-1]["status"] == "finished", seen[-1]
    after = [j["detail"]["iteration"] for j in seen if j["status"] == "started" and j["detail"].get("attempts") == 2]
    assert after and min(after) >= (killed_at // 10) * 10 - 10  # continued from the checkpoint, not from 0
    assert second.wait(timeout=60) == 0
    manifest = api.get("/v1/styles/survivor").json()
    assert manifest["training"]["resumed_from"] >= 30 and manifest["recipe"]["iterations"] == 200
    assert not (store / ".work" / job_id).exists()


@pytest.mark.slow
def test_a_stylize_job_whose_worker_dies_fails_within_its_lease(
    api: TestClient, start_worker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """A stylize job's lease was its timeout + 60 s: a worker killed mid-job left it `started`
    for minutes. The worker renews a short lease (here 2 s) while the job runs."""
    photo = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 140, 200)).resize((3000, 3000)).save(photo, "JPEG", quality=80)
    r = api.post(
        "/v1/stylize", files={"image": ("big.jpg", photo.getvalue(), "image/jpeg")},
        data={"style": "tiny", "max_size": "3000"},
    )  # fmt: skip
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    worker = start_worker("--queues", "stylize", INSTYLE_STYLIZE_LEASE_S="2", INSTYLE_TILE_MEGAPIXELS="0.2")
    seen = wait_for(api, job_id, lambda j: j["status"] == "started" and j["progress"] > 0.05, timeout=120)
    assert seen[-1]["progress"] < 0.9  # mid-pass
    time.sleep(3)  # longer than the lease: a live worker renewed it
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "started"
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    killed = time.monotonic()
    final = wait_for(api, job_id, lambda j: j["status"] != "started", timeout=30)[-1]
    assert final["status"] == "failed" and final["error"]["code"] == "worker_lost", final
    assert time.monotonic() - killed < 10


@pytest.mark.slow
def test_cancel_a_running_training_publishes_nothing(
    api: TestClient, start_worker: Callable[..., subprocess.Popen[bytes]], store: Path
) -> None:
    job_id = submit(api, "doomed", **{**TINY_RECIPE, "iterations": "5000"})["job_id"]
    worker = start_worker("--burst")
    wait_for(api, job_id, lambda j: j["detail"].get("iteration", 0) >= 5)
    t0 = time.monotonic()
    assert api.delete(f"/v1/jobs/{job_id}").status_code == 200
    final = wait_for(api, job_id, lambda j: j["status"] in ("canceled", "failed", "finished"), timeout=30)[-1]
    assert final["status"] == "canceled" and time.monotonic() - t0 < 10
    assert worker.wait(timeout=60) == 0
    assert "doomed" not in {s["id"] for s in api.get("/v1/styles").json()}
    assert not (store / "doomed").exists() and not (store / ".work" / job_id).exists()


@pytest.mark.slow
def test_retry_budget_exhausted_fails_with_a_reason(
    redis_url: str, store: Path, start_worker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    settings = ServiceSettings(redis_url=redis_url, store=store, api_keys=[KEY], train_retries=0)
    with TestClient(create_app(settings)) as api:
        job_id = submit(api, "fragile", **{**TINY_RECIPE, "iterations": "5000"})["job_id"]
        worker = start_worker()
        wait_for(api, job_id, lambda j: j["detail"].get("iteration", 0) >= 5)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        final = wait_for(api, job_id, lambda j: j["status"] != "started", timeout=60)[-1]
        assert final["status"] == "failed"
        assert final["error"]["code"] == "worker_lost" and "no retries left" in final["error"]["message"]
        metrics = api.get("/metrics").text  # the API's read found it lost, and counted it
        assert 'instyle_job_attempts_lost_total{type="train"} 1' in metrics
        assert 'instyle_job_duration_seconds_count{status="failed",type="train"} 1' in metrics
        assert final["ended_at"] is not None  # RQ's registry cleanup leaves the job's own unset
        assert "fragile" not in {s["id"] for s in api.get("/v1/styles").json()}
