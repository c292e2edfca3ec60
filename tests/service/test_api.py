"""The HTTP API against a real redis-server and a real worker (burst mode)."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.service.conftest import MakeClient

PROBLEM = "application/problem+json"


def png(size: tuple[int, int] = (40, 30), mode: str = "RGB", color: object = (10, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")  # type: ignore[arg-type]
    return buf.getvalue()


def post(client: TestClient, data: bytes, name: str = "photo.png", **fields: str) -> object:
    form = {"style": "tiny", **fields}
    return client.post("/v1/stylize", files={"image": (name, data, "application/octet-stream")}, data=form)


def assert_problem(response: object, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith(PROBLEM)  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["status"] == status and body["code"] == code
    assert body["title"] and body["detail"] and body["type"].endswith(code)
    return body  # type: ignore[no-any-return]


def test_stylize_flow(client: TestClient, run_worker: Callable[[], None]) -> None:
    r = post(client, png((40, 30)), format="png", max_size="20")
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["location"] == body["status_url"]
    job = client.get(body["status_url"]).json()
    assert job["status"] == "queued" and job["type"] == "stylize" and job["progress"] == 0.0
    assert_problem(client.get(body["result_url"]), 409, "result_not_ready")
    run_worker()
    job = client.get(body["status_url"]).json()
    assert job["status"] == "finished" and job["progress"] == 1.0 and job["error"] is None
    assert job["started_at"] and job["ended_at"] and job["result_url"] == body["result_url"]
    result = client.get(body["result_url"])
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(result.content)) as img:
        assert img.size == (20, 15)  # long side capped by max_size


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: png((30, 20), "RGBA", (255, 0, 0, 0)), "alpha.png"),
        (lambda: png((30, 20), "P", 3), "palette.png"),
        (lambda: png((30, 20), "LA", (90, 10)), "la.png"),
        (lambda: png((30, 20), "I;16", 40000), "16bit.png"),
    ],
)
def test_unusual_modes_are_normalized(
    client: TestClient, run_worker: Callable[[], None], make: Callable[[], bytes], name: str
) -> None:
    r = post(client, make(), name)
    assert r.status_code == 202, r.text
    run_worker()
    assert client.get(r.json()["status_url"]).json()["status"] == "finished"


def test_animated_gif_and_cmyk_jpeg(client: TestClient, run_worker: Callable[[], None]) -> None:
    frames = [Image.new("P", (24, 16), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    cmyk = io.BytesIO()
    Image.new("CMYK", (24, 16), (0, 100, 200, 0)).save(cmyk, "JPEG")
    ids = [
        post(client, buf.getvalue(), "anim.gif").json()["job_id"],
        post(client, cmyk.getvalue(), "c.jpg").json()["job_id"],
    ]
    run_worker()
    for job_id in ids:
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "finished"


def test_bad_uploads(make_client: MakeClient) -> None:
    client = make_client(max_pixels=1000, max_upload_bytes=4096)
    assert_problem(post(client, b"this is not an image", "x.png"), 415, "unsupported_media_type")
    full = io.BytesIO()
    Image.effect_noise((30, 30), 60).convert("RGB").save(full, "JPEG")
    assert_problem(post(client, full.getvalue()[: len(full.getvalue()) // 2], "t.jpg"), 400, "corrupt_image")
    assert_problem(post(client, png((40, 30))), 413, "image_too_large")  # 1200 px > 1000
    # a header declaring 10^10 px: Pillow's own decompression-bomb cap trips first; ours is named
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    body = assert_problem(post(client, bomb + b"\0\0\0\0IEND\xaeB`\x82"), 413, "image_too_large")
    assert "the limit is 0.0 MP" in str(body["detail"]) and "Pillow" not in str(body["detail"])
    big = io.BytesIO()
    Image.effect_noise((30, 30), 100).convert("RGB").save(big, "PNG", compress_level=0)
    assert_problem(post(client, big.getvalue() + b"\0" * 8000), 413, "upload_too_large")
    ico = io.BytesIO()  # a real image, but not a format we accept
    Image.new("RGB", (16, 16)).save(ico, "ICO")
    assert_problem(post(client, ico.getvalue(), "x.ico"), 415, "unsupported_media_type")


def test_bad_fields(client: TestClient) -> None:
    """Every 422, FastAPI's own or the service's checks, has one shape: ``errors`` names each field."""
    titles = set()

    def invalid(response: object, field: str) -> None:
        body = assert_problem(response, 422, "invalid_field")
        assert field in str(body["detail"]) and field in [e["field"] for e in body["errors"]], body  # type: ignore[union-attr]
        titles.add(body["title"])

    assert_problem(post(client, png(), style="no-such-style"), 404, "style_not_found")
    invalid(post(client, png(), style="Bad/Id"), "style")
    for field, value in [("format", "gif"), ("quality", "0"), ("max_size", "5"), ("preserve_color", "maybe")]:
        invalid(post(client, png(), **{field: value}), field)
    invalid(post(client, png(), max_size="99999"), "max_size")
    r = client.post("/v1/stylize?wait=99", files={"image": ("a.png", png(), "image/png")}, data={"style": "tiny"})
    invalid(r, "wait")
    invalid(client.post("/v1/stylize", data={"style": "tiny"}), "image")
    invalid(client.get("/v1/styles/tiny/preview?kind=bogus"), "kind")
    assert titles == {"Invalid field"}
    # a body that does not parse as multipart: a named code and the status's own title
    r = client.post("/v1/stylize", content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data"})
    body = assert_problem(r, 400, "bad_request")
    assert body["title"] == "Bad Request"


def test_queue_cap_answers_429(make_client: MakeClient) -> None:
    client = make_client(max_queue_depth=2)
    assert post(client, png()).status_code == 202
    assert post(client, png()).status_code == 202
    r = post(client, png())
    assert_problem(r, 429, "queue_full")
    assert int(r.headers["retry-after"]) >= 1


def test_unknown_and_expired(make_client: MakeClient, run_worker: Callable[[], None]) -> None:
    client = make_client(result_ttl_s=3)
    assert_problem(client.get("/v1/jobs/0123456789abcdef"), 404, "job_not_found")
    job_id = post(client, png()).json()["job_id"]
    run_worker()
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 200
    time.sleep(3.5)
    assert_problem(client.get(f"/v1/jobs/{job_id}/result"), 410, "result_expired")


def test_failing_job_reports_why_and_the_worker_carries_on(
    client: TestClient, run_worker: Callable[[], None], tiny_store: Path
) -> None:
    first = post(client, png()).json()["job_id"]
    # the upload vanishes before a worker picks the job up (e.g. Redis evicted it)
    client.app.state.instyle.redis.delete(*client.app.state.instyle.redis.keys("instyle:in:*"))  # type: ignore[attr-defined]
    second = post(client, png()).json()["job_id"]
    run_worker()
    failed = client.get(f"/v1/jobs/{first}").json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "input_expired" and "expired" in failed["error"]["message"]
    ended = assert_problem(client.get(f"/v1/jobs/{first}/result"), 409, "no_result")  # final: not "not ready"
    assert "ended failed (input_expired" in str(ended["detail"])
    assert client.get(f"/v1/jobs/{second}").json()["status"] == "finished"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("delete", "style_not_found"),  # deleted through the API after the job was queued
        ("truncate", "artifact_corrupt"),  # its artifact no longer matches its manifest's checksum
    ],
)
def test_a_style_gone_or_damaged_after_queueing_fails_its_job_with_the_reason(
    redis_url: str, tiny_store: Path, tmp_path: Path, change: str, code: str
) -> None:
    import shutil

    from redis import Redis

    from instyle.protocol import QUEUES
    from service.app import create_app
    from service.settings import ServiceSettings
    from worker.context import build_context
    from worker.runner import make_worker
    from worker.settings import WorkerSettings

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    with TestClient(create_app(ServiceSettings(redis_url=redis_url, store=store))) as client:
        redis = Redis.from_url(redis_url)
        build_context(WorkerSettings(redis_url=redis_url, store=store, device="cpu"), redis)  # nothing loaded yet
        doomed = post(client, png()).json()["job_id"]
        artifact = store / "tiny" / "1" / "generator.ts"
        if change == "delete":
            assert client.delete("/v1/styles/tiny").status_code == 204
        else:
            artifact.write_bytes(artifact.read_bytes()[:100])
        make_worker(redis, list(QUEUES)).work(burst=True, with_scheduler=False)
        job = client.get(f"/v1/jobs/{doomed}").json()
        assert job["status"] == "failed" and job["error"]["code"] == code, job
        assert "tiny" in job["error"]["message"]
        assert_problem(client.get(f"/v1/jobs/{doomed}/result"), 409, "no_result")


def test_a_job_that_waits_longer_than_its_input_fails_as_input_expired(
    make_client: MakeClient, run_worker: Callable[[], None]
) -> None:
    """The job outlives its upload in the queue: a backlog longer than ``input_ttl_s`` ends in
    a failure that says why (the job itself used to expire with it: 410, and no terminal state)."""
    client = make_client(input_ttl_s=1)
    job_id = post(client, png()).json()["job_id"]
    time.sleep(1.5)
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
    run_worker()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["error"]["code"] == "input_expired"


def test_malformed_job_ids_are_unknown_jobs(client: TestClient) -> None:
    """Ids RQ refuses to look up (a ValueError in ``Job.fetch``) answer 404 like any unknown id."""
    for job_id in ["*", "a%20b", "%C3%BCn", "%2500", "x.y"]:
        for path in [f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/result", f"/v1/jobs/{job_id}/preview"]:
            assert_problem(client.get(path), 404, "job_not_found")
        assert_problem(client.delete(f"/v1/jobs/{job_id}"), 404, "job_not_found")


def test_a_stylize_job_has_no_preview(client: TestClient, run_worker: Callable[[], None]) -> None:
    job_id = post(client, png()).json()["job_id"]
    run_worker()
    body = assert_problem(client.get(f"/v1/jobs/{job_id}/preview"), 404, "no_such_image")
    assert "/result" in str(body["detail"])


def test_cancel_a_queued_job(client: TestClient, run_worker: Callable[[], None]) -> None:
    job_id = post(client, png()).json()["job_id"]
    r = client.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    assert r.json()["ended_at"] is not None  # RQ sets none on a job that never started
    run_worker()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "canceled" and job["ended_at"] == r.json()["ended_at"]
    assert "canceled_at" not in job["detail"]
    result = assert_problem(client.get(f"/v1/jobs/{job_id}/result"), 409, "no_result")
    assert "ended canceled (canceled: the job was canceled)" in str(result["detail"])
    assert_problem(client.delete(f"/v1/jobs/{job_id}"), 409, "job_not_cancelable")
    metrics = client.get("/metrics").text  # it ended canceled: counted so, though no worker saw it
    assert 'instyle_job_duration_seconds_count{status="canceled",type="stylize"} 1' in metrics


def _while_waiting(client: TestClient, act: Callable[[str], None], wait: float = 10) -> tuple[object, float]:
    """POST with ``?wait=`` from a thread; meanwhile, once the job is queued, ``act(job_id)`` runs
    here (a worker installs signal handlers: main thread only). Returns the response and the
    seconds the request took."""
    redis = client.app.state.instyle.redis  # type: ignore[attr-defined]
    answer: list[tuple[object, float]] = []

    def request() -> None:
        start = time.monotonic()
        form = {"style": "tiny", "format": "png"}
        r = client.post(f"/v1/stylize?wait={wait}", files={"image": ("a.png", png(), "image/png")}, data=form)
        answer.append((r, time.monotonic() - start))

    thread = threading.Thread(target=request)
    thread.start()
    deadline = time.monotonic() + 5
    while not (queued := redis.lrange("rq:queue:stylize", 0, 0)) and time.monotonic() < deadline:
        time.sleep(0.01)
    act(queued[0].decode())
    thread.join(timeout=20)
    return answer[0]


def test_wait_returns_the_image_as_soon_as_the_job_finishes(client: TestClient, run_worker: Callable[[], None]) -> None:
    r, elapsed = _while_waiting(client, lambda _: run_worker())
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"  # type: ignore[attr-defined]
    job_id = r.headers["x-job-id"]  # type: ignore[attr-defined]
    assert r.headers["location"].endswith(f"/v1/jobs/{job_id}")  # type: ignore[attr-defined]
    assert r.headers["server-timing"].startswith("model;dur=")  # type: ignore[attr-defined]
    assert r.content == client.get(f"/v1/jobs/{job_id}/result").content  # type: ignore[attr-defined]
    assert elapsed < 8


def test_wait_ends_early_when_the_job_fails_or_is_canceled(client: TestClient, run_worker: Callable[[], None]) -> None:
    redis = client.app.state.instyle.redis  # type: ignore[attr-defined]

    def lose_the_upload(_: str) -> None:
        redis.delete(*redis.keys("instyle:in:*"))
        run_worker()

    r, elapsed = _while_waiting(client, lose_the_upload)
    body = r.json()  # type: ignore[attr-defined]
    assert r.status_code == 202 and body["status"] == "failed" and elapsed < 8  # type: ignore[attr-defined]
    assert client.get(body["status_url"]).json()["error"]["code"] == "input_expired"
    # canceled while queued: no outcome is ever recorded; the status read between slices sees it
    r, elapsed = _while_waiting(client, lambda job_id: client.delete(f"/v1/jobs/{job_id}"))
    assert r.status_code == 202 and r.json()["status"] == "canceled" and elapsed < 8  # type: ignore[attr-defined]


def test_styles(client: TestClient) -> None:
    styles = client.get("/v1/styles").json()
    tiny = next(s for s in styles if s["id"] == "tiny")
    assert tiny["version"] == 1 and tiny["arch"] == "johnson" and tiny["norm"] == "instance"
    detail = client.get("/v1/styles/tiny").json()
    assert detail["artifact"]["format"] == "torchscript" and len(detail["artifact"]["sha256"]) == 64
    assert client.get("/v1/styles/tiny@1").status_code == 200
    preview = client.get("/v1/styles/tiny/preview")
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/jpeg"
    assert_problem(client.get("/v1/styles/nope"), 404, "style_not_found")
    assert_problem(client.get("/v1/styles/Bad_Id"), 404, "style_not_found")
    assert_problem(client.get("/v1/styles/..%2Fetc"), 404, "not_found")  # never reaches the route
    missing = assert_problem(client.get("/v1/styles/tiny@9"), 404, "style_not_found")
    assert "has no version 9 (versions: 1)" in str(missing["detail"])
    missing = assert_problem(post(client, png(), style="tiny@9"), 404, "style_not_found")
    assert "has no version 9 (versions: 1)" in str(missing["detail"])
    shipped = next(s["id"] for s in styles if s["id"] != "tiny")  # the styles shipped in the repository
    body = assert_problem(client.delete(f"/v1/styles/{shipped}"), 409, "style_read_only")
    assert "shipped with instyle" in str(body["detail"])
    assert client.get(f"/v1/styles/{shipped}").status_code == 200


def test_health_readiness_and_metrics(client: TestClient, run_worker: Callable[[], None]) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    body = assert_problem(r, 503, "not_ready")
    assert "workers:stylize" in body["failing"] and "no live worker" in str(body["detail"])  # type: ignore[operator]
    post(client, png())
    run_worker()
    text = client.get("/metrics").text
    assert 'instyle_http_requests_total{method="POST",route="/v1/stylize",status="202"} 1' in text
    assert "instyle_http_request_duration_seconds_bucket" in text
    assert 'instyle_queue_depth{queue="stylize"} 0' in text
    assert 'instyle_jobs{queue="stylize",status="finished"} 1' in text
    assert 'instyle_model_load_seconds{style="tiny@1"}' in text
    assert (
        'instyle_http_request_duration_seconds_bucket{method="POST",route="/v1/stylize",status="202",le="0.005"}'
        in text
    )
    assert 'instyle_upload_bytes_bucket{route="/v1/stylize",le="16384"}' in text
    # pushed by the worker through Redis (instyle.telemetry)
    assert 'instyle_job_duration_seconds_count{status="finished",type="stylize"}' in text
    assert 'instyle_inference_seconds_count{size="256",style="tiny@1"}' in text
    assert 'instyle_model_cache_total{result="miss"}' in text
    assert "instyle_model_load_duration_seconds_count" in text


def test_a_stylize_job_sends_its_own_redis_work_in_three_round_trips(
    client: TestClient, run_worker: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three pipelines: the photo, then progress and metrics after the pass, then the result;
    the generator cache's lookups and the job's duration ride along (each round trip costs the
    worker ~0.1 ms of CPU on every image), and still reach /metrics."""
    from redis.connection import AbstractConnection

    import worker.jobs

    sent: list[int] = []
    inside = threading.local()
    real_send, real_stylize = AbstractConnection.send_packed_command, worker.jobs.stylize

    def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        if getattr(inside, "job", False):
            sent.append(1)
        return real_send(self, command, check_health)

    def stylize(payload):  # type: ignore[no-untyped-def]
        inside.job = True
        try:
            return real_stylize(payload)
        finally:
            inside.job = False

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send_packed_command)
    monkeypatch.setattr(worker.jobs, "stylize", stylize)
    post(client, png())
    run_worker()  # the first job loads the style (two round trips more, once)
    sent.clear()
    job_id = post(client, png()).json()["job_id"]
    run_worker()
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "finished"
    assert len(sent) == 3
    text = client.get("/metrics").text
    assert 'instyle_job_duration_seconds_count{status="finished",type="stylize"} 2' in text
    assert 'instyle_model_cache_total{result="miss"}' in text  # the lookup of the job's style


def test_a_started_job_stops_at_its_next_check_point(client: TestClient, run_worker: Callable[[], None]) -> None:
    from instyle.protocol import CANCEL_PREFIX

    job_id = post(client, png()).json()["job_id"]
    # what DELETE sets for a started job (the worker cannot be interrupted from outside)
    client.app.state.instyle.redis.set(f"{CANCEL_PREFIX}{job_id}", "1")  # type: ignore[attr-defined]
    run_worker()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "canceled" and job["error"]["code"] == "canceled"
    assert_problem(client.get(f"/v1/jobs/{job_id}/result"), 409, "no_result")


def test_byte_cap_applies_while_streaming_without_content_length(make_client: MakeClient) -> None:
    client = make_client(max_upload_bytes=4096)

    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="style"\r\n\r\ntiny\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(64):  # 64 KiB in 1 KiB chunks, no Content-Length (chunked transfer)
            yield b"\0" * 1024
        yield b"\r\n--b--\r\n"

    r = client.post("/v1/stylize", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert_problem(r, 413, "upload_too_large")
    multipart = {"content-type": "multipart/form-data; boundary=b"}
    too_long = client.post("/v1/stylize", content=b"\0" * 8192, headers=multipart)
    assert_problem(too_long, 413, "upload_too_large")  # refused by its Content-Length, before any route
    # the metrics count what the clients got: both 413s (they saw FastAPI's 400 for the cut-off
    # form, and nothing at all for the refused Content-Length, before the fix)
    text = client.get("/metrics").text
    assert 'instyle_http_requests_total{method="POST",route="/v1/stylize",status="413"} 1' in text
    assert 'instyle_http_requests_total{method="POST",route="unmatched",status="413"} 1' in text
    assert 'status="400"' not in text


def test_redis_down_is_a_503_problem(tiny_store: Path) -> None:
    from service.app import create_app
    from service.settings import ServiceSettings
    from tests.conftest import free_port

    settings = ServiceSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0", store=tiny_store)
    with TestClient(create_app(settings)) as client:
        r = post(client, png())
        assert_problem(r, 503, "redis_unavailable")
        assert r.headers["retry-after"] == "5"
        body = assert_problem(client.get("/readyz"), 503, "not_ready")
        assert "redis" in body["failing"]  # type: ignore[operator]
        assert client.get("/healthz").status_code == 200
        metrics = client.get("/metrics")  # the API's own metrics still, and a line saying what is missing
        assert metrics.status_code == 200 and "# redis unavailable:" in metrics.text
        assert 'instyle_http_requests_total{method="POST",route="/v1/stylize",status="503"} 1' in metrics.text


def test_a_redis_that_stops_answering_is_a_503_not_a_hang(tiny_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A paused or partitioned Redis (connections accepted, nothing answered) held every request
    that touched it, and with them the server's threads: each is a 503 after the API's timeout."""
    import socket
    import time

    from service import app as app_module
    from service.settings import ServiceSettings

    monkeypatch.setattr(app_module, "REDIS_TIMEOUT_S", 0.5)
    with socket.socket() as silent:  # the kernel completes connections to it; nothing ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        settings = ServiceSettings(redis_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0", store=tiny_store)
        with TestClient(app_module.create_app(settings)) as client:
            started = time.monotonic()
            assert_problem(post(client, png()), 503, "redis_unavailable")
            body = assert_problem(client.get("/readyz"), 503, "not_ready")
            assert body["failing"] == ["redis", "workers:stylize", "workers:train"]
            assert "Timeout" in body["checks"]["redis"]["detail"]  # type: ignore[index]
            assert client.get("/healthz").status_code == 200
            assert time.monotonic() - started < 10


def test_redis_lost_after_queueing_names_the_job(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis stops answering while ``?wait=`` waits on a job it has queued: the 503 names the job,
    so that the client polls it instead of sending the image again."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    jobs = client.app.state.instyle.jobs  # type: ignore[attr-defined]

    def lost(*_args: object) -> None:
        raise RedisConnectionError("Connection closed by server.")

    monkeypatch.setattr(jobs, "next_outcome", lost)
    r = client.post("/v1/stylize?wait=5", files={"image": ("a.png", png(), "image/png")}, data={"style": "tiny"})
    body = assert_problem(r, 503, "redis_unavailable")
    assert r.headers["retry-after"] == "5"
    job_id = body["job_id"]
    assert isinstance(job_id, str) and job_id in str(body["detail"])
    assert r.headers["location"] == body["status_url"] == f"http://testserver/v1/jobs/{job_id}"
    assert body["result_url"] == f"http://testserver/v1/jobs/{job_id}/result"
    monkeypatch.undo()  # Redis is back: the job is there, queued
    status = client.get(f"/v1/jobs/{job_id}")
    assert status.status_code == 200 and status.json()["status"] == "queued"


def test_request_metrics_count_errors_and_unmatched_routes(make_client: MakeClient) -> None:
    """The metrics middleware records what the client got, also when a route raises (500) or
    no route matches."""
    client = make_client()

    @client.app.get("/boom")  # type: ignore[attr-defined,misc]
    def boom() -> None:
        raise RuntimeError("a bug")

    quiet = TestClient(client.app, raise_server_exceptions=False)  # type: ignore[arg-type]
    assert quiet.get("/boom").status_code == 500
    assert client.get("/nowhere").status_code == 404
    text = client.get("/metrics").text
    assert 'instyle_http_requests_total{method="GET",route="/boom",status="500"} 1' in text
    assert 'instyle_http_requests_total{method="GET",route="unmatched",status="404"} 1' in text


def test_a_stylize_jobs_timeout_grows_with_its_output(client: TestClient, make_client: MakeClient) -> None:
    from rq.job import Job

    redis = client.app.state.instyle.redis  # type: ignore[attr-defined]
    settings = client.app.state.instyle.settings  # type: ignore[attr-defined]
    small = post(client, png((40, 30))).json()["job_id"]
    big = post(client, png((1200, 900)), max_size="1000").json()["job_id"]  # stylized at 1000 x 750
    assert Job.fetch(small, connection=redis).timeout == settings.stylize_timeout_s + 1  # 1200 px: 0.012 s, rounded up
    assert Job.fetch(big, connection=redis).timeout == settings.stylize_timeout_s + 8  # 0.75 MP x 10 s
    strict = make_client(stylize_timeout_s=30, stylize_timeout_s_per_megapixel=0)
    job = post(strict, png((1200, 900))).json()["job_id"]
    assert Job.fetch(job, connection=redis).timeout == 30


def test_output_pixels_follow_the_workers_resize() -> None:
    from service.uploads import UploadInfo
    from stylenet.imageio import resize_max

    for size, max_size in [((40, 30), 1024), ((1200, 900), 1000), ((999, 7), 100), ((3, 5000), 333)]:
        expected = resize_max(Image.new("RGB", size), max_size).size
        assert UploadInfo("PNG", *size, frames=1).output_pixels(max_size) == expected[0] * expected[1]


def test_a_tiled_job_reports_progress_and_stops_mid_pass_when_canceled(
    client: TestClient, redis_url: str, tiny_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis import Redis
    from rq.job import Job
    from rq.serializers import JSONSerializer

    import worker.jobs
    from instyle.protocol import CANCEL_PREFIX, QUEUES
    from worker.context import build_context
    from worker.runner import make_worker
    from worker.settings import WorkerSettings

    redis = Redis.from_url(redis_url)
    settings = WorkerSettings(redis_url=redis_url, store=tiny_store, device="cpu", tile_megapixels=0.001)
    build_context(settings, redis)  # 40 x 30 = 1200 pixels: tiled
    monkeypatch.setattr(worker.jobs, "PASS_REPORT_EVERY_S", 0.0)
    real = worker.jobs.stylize_pixels
    seen: list[float] = []
    finished: list[bool] = []

    def stylize_pixels(*args, **kwargs):  # type: ignore[no-untyped-def]
        report = args[-1]
        assert report is not None  # the job passes its reporter

        def watch(done: float) -> None:
            meta = Job.fetch(job_id, connection=redis, serializer=JSONSerializer).meta
            seen.append(meta["progress"])
            report(done)
            if done > 0.3:  # the user cancels while the pass runs
                redis.set(f"{CANCEL_PREFIX}{job_id}", "1")

        out = real(*args[:-1], watch, **kwargs)
        finished.append(True)
        return out

    monkeypatch.setattr(worker.jobs, "stylize_pixels", stylize_pixels)
    job_id = post(client, png((40, 30))).json()["job_id"]
    make_worker(redis, list(QUEUES)).work(burst=True, with_scheduler=False)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "canceled" and job["error"]["code"] == "canceled"
    assert finished == []  # the pass was abandoned, not run to its end
    assert seen[0] == 0.2 and 0.2 < max(seen) < 0.9  # progress moved on during the pass


def test_the_openapi_schema_documents_the_problems_the_api_sends(client: TestClient) -> None:
    """Errors are documented as they are sent: a ``Problem`` in problem+json, with each route's
    statuses (FastAPI alone documented only a JSON 422, ``HTTPValidationError``)."""
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert {"type", "title", "status", "detail", "code"} <= set(schema["components"]["schemas"]["Problem"]["required"])
    stylize = schema["paths"]["/v1/stylize"]["post"]["responses"]
    assert {"202", "200", "400", "404", "413", "415", "422", "429", "500", "503"} <= set(stylize)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    assert list(response["content"]) == [PROBLEM], (path, method, status)
                    assert response["content"][PROBLEM]["schema"]["$ref"].endswith("/Problem")
    assert {"404", "409", "410"} <= set(schema["paths"]["/v1/jobs/{job_id}/result"]["get"]["responses"])
    # what the API sends matches the schema's Problem
    from service.problems import Problem

    Problem.model_validate(client.get("/v1/jobs/nope").json())
    Problem.model_validate(post(client, png(), quality="0").json())
    # images as images (FastAPI added an application/json 200 to routes that never send one)
    images = {"image/jpeg", "image/png", "image/webp"}
    for path, method, types in [
        ("/v1/stylize", "post", images), ("/v1/jobs/{job_id}/result", "get", images),
        ("/v1/jobs/{job_id}/preview", "get", {"image/jpeg"}), ("/v1/styles/{style_ref}/preview", "get", {"image/jpeg"}),
    ]:  # fmt: skip
        assert set(schema["paths"][path][method]["responses"]["200"]["content"]) == types, path
    assert "503" in schema["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]  # Redis away
    # the training form's fields carry the bounds the server enforces
    form = schema["paths"]["/v1/styles"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    fields = schema["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]]["properties"]
    assert (fields["iterations"]["minimum"], fields["iterations"]["maximum"]) == (1, 200_000)
    assert (fields["lr"]["exclusiveMinimum"], fields["lr"]["maximum"]) == (0, 0.1)


def test_a_damaged_style_is_a_clear_503_without_the_servers_paths(
    redis_url: str, tiny_store: Path, tmp_path: Path
) -> None:
    """A manifest that does not parse: stylize answered 500, the style's page a 404 naming the
    server's absolute path and the parser's error."""
    import shutil

    from service.app import create_app
    from service.settings import ServiceSettings

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    shutil.copytree(store / "tiny", store / "damaged")
    (store / "damaged" / "1" / "manifest.json").write_text("{not json")
    with TestClient(create_app(ServiceSettings(redis_url=redis_url, store=store))) as client:
        for response in (
            post(client, png(), style="damaged"),
            client.get("/v1/styles/damaged@1"),
            client.get("/v1/styles/damaged/preview"),
        ):
            body = assert_problem(response, 503, "style_unavailable")
            assert str(tmp_path) not in str(body["detail"]) and "json" not in str(body["detail"]).lower()
        assert post(client, png(), style="tiny").status_code == 202  # the others are unaffected


def test_head_answers_as_get_without_the_body_and_405_says_what_is_allowed(client: TestClient) -> None:
    job_id = post(client, png()).json()["job_id"]
    for path in ("/healthz", "/v1/styles", "/v1/styles/tiny", f"/v1/jobs/{job_id}", "/v1/jobs/nope", "/"):
        head, get = client.head(path), client.get(path)
        assert head.status_code == get.status_code and head.content == b"", path
        assert head.headers["content-length"] == get.headers["content-length"], path
        assert head.headers["content-type"] == get.headers["content-type"], path
    r = client.put("/v1/stylize")
    assert_problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"  # RFC 9110 section 15.5.6
    assert client.head("/v1/stylize").headers["allow"] == "POST"
    # every route of the path, each its own in FastAPI: the header named the first one's only
    for path, allow in [("/v1/styles", "GET, HEAD, POST"), (f"/v1/jobs/{job_id}", "GET, HEAD, DELETE"),
                        ("/v1/styles/tiny", "GET, HEAD, DELETE"), ("/healthz", "GET, HEAD")]:  # fmt: skip
        assert client.put(path).headers["allow"] == allow, path
    text = client.get("/metrics").text
    assert 'instyle_http_requests_total{method="HEAD",route="/healthz",status="200"} 1' in text
    assert 'instyle_http_requests_total{method="HEAD",route="/v1/jobs/{job_id}",status="200"} 1' in text
