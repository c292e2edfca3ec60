"""``instyle.client`` against a scripted HTTP server: the answers that say "come back later"."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from instyle import client

Answer = tuple[int, dict[str, str], bytes]


def problem(status: int, code: str, retry_after: str | None = None, **extra: str) -> Answer:
    headers = {"Content-Type": "application/problem+json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    body = {"type": f"/problems/{code}", "title": code, "status": status, "code": code, "detail": code, **extra}
    return status, headers, json.dumps(body).encode()


def ok(status: int, body: dict[str, Any]) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


class Scripted:
    """Answers each (method, path) with the next answer of its script, and records the requests."""

    def __init__(self, script: dict[tuple[str, str], list[Answer]]) -> None:
        self.script = {key: list(answers) for key, answers in script.items()}
        self.seen: list[tuple[str, str]] = []
        self.authorization: list[str | None] = []

    def answer(self, method: str, path: str, authorization: str | None = None) -> Answer:
        self.seen.append((method, path))
        self.authorization.append(authorization)
        answers = self.script[(method, path)]
        return answers.pop(0) if len(answers) > 1 else answers[0]


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(scripted: Scripted) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                status, headers, body = scripted.answer(self.command, self.path, self.headers.get("Authorization"))
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _reply

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "p.jpg"
    path.write_bytes(b"\xff\xd8 the server never looks")
    return path


FINISHED = ok(200, {"id": "j1", "status": "finished", "result_url": "/v1/jobs/j1/result"})
RESULT: Answer = (200, {"Content-Type": "image/png"}, b"\x89PNG result")
ACCEPTED = ok(202, {"job_id": "j1", "status": "queued", "status_url": "/v1/jobs/j1"})


def test_a_full_queue_is_waited_out_and_redis_away_while_polling_is_asked_again(serve: Any, photo: Path) -> None:
    scripted = Scripted(
        {
            ("POST", "/v1/stylize"): [
                problem(429, "queue_full", "0"),
                problem(503, "redis_unavailable", "0"),
                ACCEPTED,
            ],
            ("GET", "/v1/jobs/j1"): [problem(503, "redis_unavailable", "0"), FINISHED],
            ("GET", "/v1/jobs/j1/result"): [RESULT],
        }
    )
    queued: list[str] = []
    image, content_type, job = client.submit(serve(scripted), photo, {"style": "s"}, poll_s=0, on_queued=queued.append)
    assert (image, content_type, job["id"]) == (b"\x89PNG result", "image/png", "j1")
    assert [m for m, _ in scripted.seen].count("POST") == 3 and queued[0].endswith("/v1/jobs/j1")


def test_a_job_queued_before_redis_went_away_is_followed_not_sent_again(serve: Any, photo: Path) -> None:
    lost = problem(503, "redis_unavailable", "5", job_id="j1", status_url="/v1/jobs/j1")
    scripted = Scripted(
        {("POST", "/v1/stylize"): [lost], ("GET", "/v1/jobs/j1"): [FINISHED], ("GET", "/v1/jobs/j1/result"): [RESULT]}
    )
    assert client.submit(serve(scripted), photo, {"style": "s"}, poll_s=0)[0] == b"\x89PNG result"
    assert scripted.seen.count(("POST", "/v1/stylize")) == 1


def test_refusals_that_will_not_change_are_raised_with_their_code(serve: Any, photo: Path) -> None:
    scripted = Scripted({("POST", "/v1/stylize"): [problem(404, "style_not_found")]})
    with pytest.raises(client.ServerError) as refused:
        client.submit(serve(scripted), photo, {"style": "s"})
    assert (refused.value.status, refused.value.code) == (404, "style_not_found")
    assert scripted.seen == [("POST", "/v1/stylize")]
    # a full queue past the deadline, or with no Retry-After, is an error too (never a busy loop)
    for answers in ([problem(429, "queue_full", "20")], [problem(429, "queue_full")]):
        scripted = Scripted({("POST", "/v1/stylize"): answers})
        with pytest.raises(client.ServerError) as full:
            client.submit(serve(scripted), photo, {"style": "s"}, timeout_s=5)
        assert full.value.code == "queue_full" and len(scripted.seen) == 1


def test_a_failed_job_carries_its_code_and_a_stop_ends_the_wait(serve: Any, photo: Path) -> None:
    failed = ok(200, {"id": "j1", "status": "failed", "error": {"code": "invalid_image", "message": "no"}})
    scripted = Scripted({("POST", "/v1/stylize"): [ACCEPTED], ("GET", "/v1/jobs/j1"): [failed]})
    with pytest.raises(client.ServerError, match="job j1 failed: invalid_image: no") as exc:
        client.submit(serve(scripted), photo, {"style": "s"}, poll_s=0)
    assert exc.value.code == "invalid_image"
    running = ok(200, {"id": "j1", "status": "started", "progress": 0.5})
    scripted = Scripted(
        {
            ("POST", "/v1/stylize"): [ACCEPTED],
            ("GET", "/v1/jobs/j1"): [running],
            ("DELETE", "/v1/jobs/j1"): [ok(202, {})],
        }
    )
    stop = threading.Event()
    with pytest.raises(client.ServerError, match="stopped before"):
        client.submit(serve(scripted), photo, {"style": "s"}, poll_s=5, on_queued=lambda url: stop.set(), stop=stop)
    assert client.cancel(serve(scripted) + "/v1/jobs/j1") is True
    assert client.cancel("http://127.0.0.1:9/v1/jobs/j1") is False  # nothing answers there


@pytest.mark.parametrize("photos", [1, 3])
def test_ctrl_c_cancels_the_jobs_it_leaves_on_the_server(serve: Any, photo: Path, tmp_path: Path, photos: int) -> None:
    import signal
    import subprocess
    import sys
    import time

    paths = [photo]
    for i in range(1, photos):
        paths.append(tmp_path / f"p{i}.jpg")
        paths[-1].write_bytes(photo.read_bytes())
    running = ok(200, {"id": "j1", "status": "started", "progress": 0.3})
    scripted = Scripted(
        {
            ("POST", "/v1/stylize"): [ACCEPTED],
            ("GET", "/v1/jobs/j1"): [running],
            ("DELETE", "/v1/jobs/j1"): [ok(202, {"id": "j1", "status": "canceled"})],
        }
    )
    url = serve(scripted)
    cmd = [sys.executable, "-m", "instyle.cli", "submit", *map(str, paths), "--style", "s", "--server", url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while scripted.seen.count(("GET", "/v1/jobs/j1")) < photos and time.monotonic() < deadline:
        time.sleep(0.05)  # every job queued and polled
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"instyle: canceled {photos} of {photos} queued or running job(s)" in err and "Traceback" not in err
    assert scripted.seen.count(("DELETE", "/v1/jobs/j1")) == photos
    assert not list(tmp_path.glob("*-s.jpg"))  # nothing written


def test_train_sends_the_key_waits_out_a_full_queue_and_follows_the_job(serve: Any, photo: Path) -> None:
    accepted = ok(202, {"job_id": "t1", "status": "queued", "status_url": "/v1/jobs/t1", "recipe": {"iterations": 2}})
    started = ok(200, {"id": "t1", "status": "started", "detail": {"iteration": 1, "total": 2}})
    done = ok(200, {"id": "t1", "status": "finished", "detail": {"iteration": 2, "total": 2, "style": "new@1"}})
    scripted = Scripted(
        {("POST", "/v1/styles"): [problem(429, "queue_full", "0"), accepted], ("GET", "/v1/jobs/t1"): [started, done]}
    )
    retries: list[str] = []
    queued: list[tuple[str, dict[str, Any]]] = []
    views: list[int] = []
    job = client.train(
        serve(scripted), photo, {"name": "new", "iterations": "2"}, api_key="k", poll_s=0,
        on_retry=lambda exc, seconds: retries.append(exc.code), on_queued=lambda url, a: queued.append((url, a)),
        on_progress=lambda view: views.append(view["detail"]["iteration"]),
    )  # fmt: skip
    assert job["detail"]["style"] == "new@1" and views == [1, 2] and retries == ["queue_full"]
    assert queued[0][0].endswith("/v1/jobs/t1") and queued[0][1]["recipe"] == {"iterations": 2}
    assert scripted.authorization[:2] == ["Bearer k", "Bearer k"]  # each try of the POST carries the key
    failed = ok(200, {"id": "t1", "status": "failed", "error": {"code": "train_data_missing", "message": "no photos"}})
    scripted = Scripted({("POST", "/v1/styles"): [accepted], ("GET", "/v1/jobs/t1"): [failed]})
    with pytest.raises(client.ServerError, match="train_data_missing: no photos"):
        client.train(serve(scripted), photo, {"name": "new"}, poll_s=0)
    assert scripted.authorization[0] is None  # no key, no header


def test_a_job_is_named_by_its_id_or_its_url() -> None:
    assert client.job_url("http://h:1/", "abc-123") == "http://h:1/v1/jobs/abc-123"
    assert client.job_url("http://ignored", "https://api.example/v1/jobs/x/") == "https://api.example/v1/jobs/x"
    for bad in ("", "a/b", "x?y"):
        with pytest.raises(client.ServerError, match="neither a job id nor a job's URL"):
            client.job_url("http://h:1", bad)
    with pytest.raises(client.ServerError, match="not an http"):
        client.job_url("ftp://h", "abc")


def test_only_the_post_of_a_job_is_a_refusal(serve: Any, photo: Path) -> None:
    """A batch stops on a refused upload (no job queued), not on a job whose result is gone."""
    scripted = Scripted({("POST", "/v1/stylize"): [problem(422, "invalid_field")]})
    with pytest.raises(client.ServerError) as refused:
        client.submit(serve(scripted), photo, {"style": "s"})
    assert refused.value.refused and refused.value.status == 422
    gone = problem(410, "result_expired")
    scripted = Scripted(
        {("POST", "/v1/stylize"): [ACCEPTED], ("GET", "/v1/jobs/j1"): [FINISHED], ("GET", "/v1/jobs/j1/result"): [gone]}
    )
    with pytest.raises(client.ServerError) as expired:
        client.submit(serve(scripted), photo, {"style": "s"}, poll_s=0)
    assert not expired.value.refused and expired.value.code == "result_expired"


def test_submit_cli_says_when_it_waits_out_a_full_queue(
    serve: Any, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from instyle.cli import main

    scripted = Scripted(
        {
            ("POST", "/v1/stylize"): [problem(429, "queue_full", "0"), ACCEPTED],
            ("GET", "/v1/jobs/j1"): [FINISHED],
            ("GET", "/v1/jobs/j1/result"): [RESULT],
        }
    )
    out = tmp_path / "out.png"
    assert main(["submit", str(photo), "--style", "s", "--server", serve(scripted), "-o", str(out)]) == 0
    assert "instyle: 429 queue_full: queue_full; trying again in 0 s" in capsys.readouterr().err
    assert out.read_bytes() == b"\x89PNG result"


def test_styles_reads_the_catalog_and_refuses_a_foreign_answer(serve: Any) -> None:
    catalog = (200, {"Content-Type": "application/json"}, json.dumps([{"id": "a", "version": 1}]).encode())
    assert client.styles(serve(Scripted({("GET", "/v1/styles"): [catalog]}))) == [{"id": "a", "version": 1}]
    for foreign in (ok(200, {"id": "a"}), (200, {"Content-Type": "text/html"}, b"<html>")):
        with pytest.raises(client.ServerError, match="did not answer as an instyle server does") as exc:
            client.styles(serve(Scripted({("GET", "/v1/styles"): [foreign]})))
        assert exc.value.code == client.NOT_INSTYLE


def test_an_upload_refused_before_it_is_all_sent_is_the_servers_refusal(photo: Path) -> None:
    """A server answers 413 and closes once it reads a Content-Length over its limit: urllib lost
    that answer in its broken pipe, and the client said "cannot reach" (a batch then stopped)."""
    import socket

    body = json.dumps({"type": "/problems/upload_too_large", "title": "t", "status": 413,
                       "code": "upload_too_large", "detail": "over 1 MB"}).encode()  # fmt: skip
    listener = socket.create_server(("127.0.0.1", 0))

    def refuse() -> None:
        for _ in range(2):  # urllib's attempt, then the one that reads the answer
            conn, _ = listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/problem+json\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                conn.shutdown(socket.SHUT_WR)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    threading.Thread(target=refuse, daemon=True).start()
    big = photo.with_name("big.jpg")
    big.write_bytes(b"\xff" * (8 << 20))  # more than the socket buffers take in
    try:
        with pytest.raises(client.ServerError) as caught:
            client.submit(f"http://127.0.0.1:{listener.getsockname()[1]}", big, {"style": "s"}, timeout_s=20)
    finally:
        listener.close()
    assert caught.value.status == 413 and caught.value.code == "upload_too_large", caught.value


def test_a_server_out_of_reach_for_a_moment_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """Following a job, a 2 s network drop ended the client with "cannot reach" while the job
    went on and finished; now it waits (``OUTAGE_S``), and past that says how to fetch the job."""
    answers: list[Any] = [
        client.ServerError("cannot reach", code=client.UNREACHABLE),
        client.ServerError("cannot reach", code=client.UNREACHABLE),
        (200, {}, json.dumps({"id": "j1", "status": "finished", "result_url": "/r"}).encode()),
    ]

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(client, "_request", request)
    monkeypatch.setattr(client._Waits, "pause", lambda self, seconds: None)
    waits = client._Waits(None, 60, "the job ended")
    assert client._follow("http://x/v1/jobs/j1", waits, 0.01, None)["status"] == "finished"
    answers[:] = [client.ServerError("cannot reach", code=client.UNREACHABLE)] * 3
    monkeypatch.setattr(client, "OUTAGE_S", 0.0)
    with pytest.raises(client.ServerError, match=r"`instyle job http://x/v1/jobs/j1 -o FILE` fetches"):
        client._follow("http://x/v1/jobs/j1", waits, 0.01, None)
