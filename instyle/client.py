"""A small HTTP client for ``instyle submit``, ``submit-style`` and ``job`` (standard library only)."""

from __future__ import annotations

import contextlib
import http.client
import json
import mimetypes
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ServerError(Exception):
    """The server answered with a problem (or could not be reached): ``status`` is the HTTP
    status (None: no answer), ``code`` the problem's code (a failed job's error code;
    ``UNREACHABLE`` / ``NOT_INSTYLE`` for no answer or a foreign one), ``problem`` its whole
    body and ``retry_after`` the seconds its ``Retry-After`` header asks for (None: none)."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str = "",
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        #: set by the POST of a job that the server refused (no job was queued)
        self.refused = False
        self.status = status
        self.code = code
        self.problem = problem or {}
        self.retry_after = retry_after


#: Problem codes that concern one upload and not the request as such: a batch goes on without it.
PHOTO_PROBLEMS = frozenset({"unsupported_media_type", "corrupt_image", "image_too_large", "upload_too_large"})
#: ``ServerError.code`` of a server that does not answer, or not as an instyle server does.
UNREACHABLE, NOT_INSTYLE = "unreachable", "not_instyle"
#: Longest pause ``submit`` takes between two tries of a refused upload (429 / 503), whatever
#: ``Retry-After`` asks.
MAX_RETRY_PAUSE_S = 30.0
#: Seconds a job being followed may be out of reach (its server restarting, a network blip)
#: before following it fails: the job itself goes on.
OUTAGE_S = 120.0


def check_server_url(server: str) -> str:
    """``server`` without its trailing slash, if it is an http(s) URL with a host."""
    try:
        parts = urllib.parse.urlsplit(server)
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
    except ValueError as exc:
        raise ServerError(f"invalid server URL {server!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        hint = f"; did you mean http://{server}?" if "://" not in server else ""
        raise ServerError(f"the server URL {server!r} is not an http:// or https:// URL{hint}")
    return server.rstrip("/")


def _json(data: bytes, url: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """``data`` as the JSON object an instyle server answers at ``url``, holding ``keys``."""
    try:
        value = json.loads(data)
    except ValueError:
        value = None
    if not isinstance(value, dict) or any(key not in value for key in keys):
        raise ServerError(f"{url} did not answer as an instyle server does (got {_snippet(data)})", code=NOT_INSTYLE)
    return value


def _snippet(data: bytes, limit: int = 80) -> str:
    """A short, printable, one-line view of an answer that is not what was expected (a web
    page, a database's greeting): no raw bytes or control characters on the terminal."""
    text = " ".join("".join(c if c.isprintable() else " " for c in data.decode("utf-8", "replace")).split())
    if not text:
        return f"{len(data)} bytes" if data else "an empty answer"
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def _request(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, dict[str, str], bytes]:
    try:
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        raise _refusal(url, exc.code, exc.headers, exc.read()) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if body is not None and isinstance(reason, BrokenPipeError | ConnectionResetError):
            # the server answered (a 413 for an upload over its limit) and closed before it had
            # taken the whole body: its answer, not "cannot reach"
            answer = _answer_to_cut_upload(method, url, body, headers or {}, timeout)
            if answer is not None:
                status, answer_headers, data = answer
                if status >= 400:
                    raise _refusal(url, status, answer_headers, data) from None
        raise ServerError(f"cannot reach {url}: {reason}", code=UNREACHABLE) from None
    except ValueError as exc:  # a URL urllib cannot use (the server may answer with one)
        raise ServerError(f"invalid URL {url!r}: {exc}") from None


def _refusal(url: str, status: int, headers: Any, data: bytes) -> ServerError:
    """The ``ServerError`` for an HTTP error answer (an instyle problem, or anything else)."""
    try:
        problem = json.loads(data)
    except ValueError:
        problem = None
    retry_after = _seconds(headers.get("Retry-After") if headers is not None else None)
    if not isinstance(problem, dict):
        return ServerError(
            f"HTTP {status} from {url}, not an instyle problem answer: {_snippet(data)}",
            status,
            retry_after=retry_after,
        )
    code = str(problem.get("code", ""))
    detail = f"{problem.get('status', status)} {code}: {problem.get('detail', '')}"
    return ServerError(detail, status, code, problem, retry_after)


def _answer_to_cut_upload(
    method: str, url: str, body: bytes, headers: dict[str, str], timeout: float
) -> tuple[int, Any, bytes] | None:
    """Send the request again, reading what the server answers even where it closes before the
    body is all sent (urllib drops the answer then); None if there is none to read."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = connection(parts.hostname or "", parts.port, timeout=timeout)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request(method, path or "/", body, headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header's delay in seconds (None: absent, or a date, which the API never sends)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _multipart(fields: dict[str, str], file_field: str, path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{path.name}"\r\n'
        f"Content-Type: {ctype}\r\n\r\n".encode()
        + path.read_bytes()
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class _Waits:
    """The pauses of one request's life: ended by ``stop``, bounded by a deadline (None: none)."""

    def __init__(self, stop: threading.Event | None, timeout_s: float | None, what: str) -> None:
        self.stop = stop or threading.Event()
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.what = what

    def fits(self, seconds: float) -> bool:
        return self.deadline is None or time.monotonic() + seconds <= self.deadline

    def pause(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise ServerError(f"stopped before {self.what}")


def _post_job(
    url: str,
    body: bytes,
    headers: dict[str, str],
    waits: _Waits,
    on_retry: Callable[[ServerError, float], None] | None = None,
) -> tuple[str, dict[str, Any]]:
    """POST a job: its status URL and the server's answer ({} where a 503 named the job). A
    refusal that says to come back (429 ``queue_full``, 503 with ``Retry-After``) is sent again
    after the pause it asks for (at most ``MAX_RETRY_PAUSE_S``; ``on_retry`` hears of it) while
    the deadline allows; a 503 that names the job it had queued before Redis stopped answering
    gives that job, not a second one."""
    while True:
        try:
            _, _, data = _request("POST", url, body, headers)
            accepted = _json(data, url, ("status_url",))
            return urllib.parse.urljoin(url, str(accepted["status_url"])), accepted
        except ServerError as exc:
            if exc.status == 503 and exc.problem.get("status_url"):  # queued: do not send it twice
                return urllib.parse.urljoin(url, str(exc.problem["status_url"])), {}
            exc.refused = exc.status is not None
            if exc.status not in (429, 503) or exc.retry_after is None:
                raise
            seconds = min(exc.retry_after, MAX_RETRY_PAUSE_S)
            if not waits.fits(seconds):
                raise
            if on_retry is not None:
                on_retry(exc, seconds)
            waits.pause(seconds)


def _follow(
    job_url: str, waits: _Waits, poll_s: float, on_progress: Callable[[dict[str, Any]], None] | None
) -> dict[str, Any]:
    """Poll the job at ``job_url`` until it finishes (its last view), or raise ``ServerError``
    with the code it failed with. Redis away for a moment (503) is asked again, and so is a
    server out of reach for up to ``OUTAGE_S`` (a network blip, a restart): the job goes on
    without its client; past that, the error says how to fetch it later."""
    unreachable_since: float | None = None
    while True:
        try:
            _, _, data = _request("GET", job_url)
        except ServerError as exc:
            if exc.code == UNREACHABLE:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since < OUTAGE_S and waits.fits(0):
                    waits.pause(1.0)
                    continue
                raise ServerError(
                    f"{exc}; the job may still run: `instyle job {job_url} -o FILE` fetches its result later",
                    code=UNREACHABLE,
                ) from None
            if exc.status != 503 or not waits.fits(0):
                raise
            waits.pause(min(exc.retry_after or 1.0, MAX_RETRY_PAUSE_S))
            continue
        unreachable_since = None
        job = _json(data, job_url, ("id", "status"))
        if on_progress is not None:
            on_progress(job)
        if job["status"] == "finished":
            return job
        if job["status"] in ("failed", "canceled"):
            error = job.get("error") or {}
            raise ServerError(
                f"job {job['id']} {job['status']}: {error.get('code', '')}: {error.get('message', '')}",
                code=str(error.get("code", "")),
            )
        if not waits.fits(0):
            raise ServerError(f"job {job['id']} did not end within the time given to it")
        waits.pause(poll_s)


def submit(
    server: str,
    photo: Path,
    fields: dict[str, str],
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    poll_s: float = 0.25,
    timeout_s: float = 600,
    on_queued: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    on_retry: Callable[[ServerError, float], None] | None = None,
) -> tuple[bytes, str, dict[str, Any]]:
    """POST the photo, poll the job until it ends, return (image bytes, content type, job).

    Refusals that say to come back are retried until ``timeout_s`` (``_post_job``; ``on_retry``
    hears of each).
    ``on_queued`` gets the job's status URL as soon as it is known (to cancel it). ``stop``,
    once set, ends the waits: a ``ServerError`` saying so."""
    waits = _Waits(stop, timeout_s, f"{photo} was stylized")
    url = f"{check_server_url(server)}/v1/stylize"
    body, ctype = _multipart(fields, "image", photo)
    job_url, _ = _post_job(url, body, {"Content-Type": ctype}, waits, on_retry)
    if on_queued is not None:
        on_queued(job_url)
    job = _follow(job_url, waits, poll_s, on_progress)
    if not job.get("result_url"):
        raise ServerError(
            f"{job_url} did not answer as an instyle server does (a finished job without result_url)", code=NOT_INSTYLE
        )
    _, headers, image = _request("GET", urllib.parse.urljoin(job_url, str(job["result_url"])))
    return image, headers.get("content-type", headers.get("Content-Type", "")), job


def train(
    server: str,
    painting: Path,
    fields: dict[str, str],
    api_key: str | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
    on_queued: Callable[[str, dict[str, Any]], None] | None = None,
    on_retry: Callable[[ServerError, float], None] | None = None,
    stop: threading.Event | None = None,
    follow: bool = True,
) -> dict[str, Any]:
    """POST a training job (``painting`` and the recipe ``fields``: ``name``, ``preset``,
    ``iterations``, ...), follow it until the style is published; the job's last view
    (``follow=False``: the accepted answer, once queued).

    ``on_queued`` gets the job's status URL and the accepted answer (its recipe), or an empty
    dict for a job a 503 named; refusals that say to come back are retried (``_post_job``)."""
    waits = _Waits(stop, timeout_s, f"the style {fields.get('name', '')} was trained")
    url = f"{check_server_url(server)}/v1/styles"
    body, ctype = _multipart(fields, "style_image", painting)
    headers = {"Content-Type": ctype, **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    job_url, accepted = _post_job(url, body, headers, waits, on_retry)
    if on_queued is not None:
        on_queued(job_url, accepted)
    if not follow:
        return accepted
    return _follow(job_url, waits, poll_s, on_progress)


def styles(server: str) -> list[dict[str, Any]]:
    """The server's catalog (``GET /v1/styles``): one object per style."""
    url = f"{check_server_url(server)}/v1/styles"
    data = _request("GET", url)[2]
    try:
        rows = json.loads(data)
    except ValueError:
        rows = None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "id" in r for r in rows):
        raise ServerError(f"{url} did not answer as an instyle server does (got {_snippet(data)})", code=NOT_INSTYLE)
    return rows


def job_url(server: str, job: str) -> str:
    """A job's status URL from its id (on ``server``) or the URL itself (``submit-style --detach``'s)."""
    if "://" in job:
        check_server_url(job)
        return job.rstrip("/")
    if not job or "/" in job or "?" in job:
        raise ServerError(f"{job!r} is neither a job id nor a job's URL")
    return f"{check_server_url(server)}/v1/jobs/{urllib.parse.quote(job)}"


def view(url: str) -> dict[str, Any]:
    """The job's view at its status URL (``GET /v1/jobs/{id}``)."""
    return _json(_request("GET", url)[2], url, ("id", "status"))


def follow(
    url: str, on_progress: Callable[[dict[str, Any]], None] | None = None, poll_s: float = 1.0
) -> dict[str, Any]:
    """Poll the job at ``url`` until it ends: its last view if it finished, else ``ServerError``
    with its error code."""
    return _follow(url, _Waits(None, None, "the job ended"), poll_s, on_progress)


def fetch(url: str) -> bytes:
    """The body at ``url`` (an image the server serves)."""
    return _request("GET", url)[2]


def cancel(url: str, strict: bool = False) -> bool:
    """Ask the server to cancel the job at ``url``; whether it took the request (a job that
    already ended, or a server that cannot be reached, is left as it is; ``strict``: raise
    the ``ServerError`` that says why instead)."""
    try:
        _request("DELETE", url, timeout=10)
    except ServerError:
        if strict:
            raise
        return False
    return True
