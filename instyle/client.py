"""A small HTTP client for ``instyle submit`` (standard library only)."""

from __future__ import annotations

import json
import mimetypes
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ServerError(Exception):
    """The server answered with a problem (or could not be reached)."""


def _request(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
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
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


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
    base = server.rstrip("/")
    body, ctype = _multipart(fields, "image", photo)
    _, _, data = _request("POST", f"{base}/v1/stylize", body, {"Content-Type": ctype})
    accepted = json.loads(data)
    job_url = accepted["status_url"]
    deadline = time.monotonic() + timeout_s
    while True:
        _, _, data = _request("GET", job_url)
        job = json.loads(data)
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
    _, headers, image = _request("GET", job["result_url"])
    return image, headers.get("content-type", headers.get("Content-Type", "")), job
