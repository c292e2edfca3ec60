"""A small HTTP client for ``instyle submit`` (standard library only)."""

from __future__ import annotations

import http.client
import json
import mimetypes
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ServerError(Exception):
    """The server answered with a problem (or could not be reached)."""


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
        raise ServerError(f"{url} did not answer as an instyle server does (got {data[:80]!r})")
    return value


def _request(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, dict[str, str], bytes]:
    try:
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        data = exc.read()
        try:
            problem = json.loads(data)
            detail = f"{problem.get('status', exc.code)} {problem.get('code', '')}: {problem.get('detail', '')}"
        except ValueError:
            detail = f"HTTP {exc.code}: {data[:200]!r}"
        raise ServerError(detail) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise ServerError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    except ValueError as exc:  # a URL urllib cannot use (the server may answer with one)
        raise ServerError(f"invalid URL {url!r}: {exc}") from None


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


def submit(
    server: str,
    photo: Path,
    fields: dict[str, str],
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    poll_s: float = 0.25,
    timeout_s: float = 600,
) -> tuple[bytes, str, dict[str, Any]]:
    """POST the photo, poll the job until it ends, return (image bytes, content type, job)."""
    base = check_server_url(server)
    body, ctype = _multipart(fields, "image", photo)
    url = f"{base}/v1/stylize"
    _, _, data = _request("POST", url, body, {"Content-Type": ctype})
    job_url = urllib.parse.urljoin(url, str(_json(data, url, ("status_url",))["status_url"]))
    deadline = time.monotonic() + timeout_s
    while True:
        _, _, data = _request("GET", job_url)
        job = _json(data, job_url, ("id", "status"))
        if on_progress is not None:
            on_progress(job)
        if job["status"] == "finished":
            break
        if job["status"] in ("failed", "canceled"):
            error = job.get("error") or {}
            raise ServerError(f"job {job['id']} {job['status']}: {error.get('code', '')}: {error.get('message', '')}")
        if time.monotonic() > deadline:
            raise ServerError(f"job {job['id']} did not finish within {timeout_s:.0f} s")
        time.sleep(poll_s)
    if not job.get("result_url"):
        raise ServerError(f"{job_url} did not answer as an instyle server does (a finished job without result_url)")
    _, headers, image = _request("GET", urllib.parse.urljoin(job_url, str(job["result_url"])))
    return image, headers.get("content-type", headers.get("Content-Type", "")), job
