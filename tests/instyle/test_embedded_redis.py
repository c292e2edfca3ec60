"""Embedded mode's Redis: a private redis-server child, or the in-process fake."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import fakeredis
import pytest

from instyle.embedded_redis import EmbeddedRedisError, open_embedded_redis, start_server

REDIS_SERVER = shutil.which("redis-server")
needs_redis_server = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")


def _gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@needs_redis_server
def test_private_server_answers_on_its_own_socket_and_leaves_nothing_behind() -> None:
    handle = open_embedded_redis("server")
    assert handle.process is not None and handle.folder is not None
    socket_path = handle.folder / "redis.sock"
    assert handle.description.startswith("private redis-server ") and str(socket_path) in handle.description
    assert oct(handle.folder.stat().st_mode & 0o777) == "0o700"  # only this user reaches the socket
    handle.client.set("k", b"v")
    assert handle.client.get("k") == b"v"
    config = handle.client.config_get("port") | handle.client.config_get("save")
    assert config == {"port": "0", "save": ""}  # no TCP listener, nothing written to disk
    pid = handle.process.pid
    handle.close()
    handle.close()  # idempotent
    assert _gone(pid) and not handle.folder.exists()


def test_memory_mode_is_the_in_process_fake() -> None:
    handle = open_embedded_redis("memory")
    assert isinstance(handle.client, fakeredis.FakeRedis) and handle.process is None
    assert handle.description == "in-process fakeredis"


def test_auto_falls_back_to_the_fake_without_redis_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert isinstance(open_embedded_redis("auto").client, fakeredis.FakeRedis)
    with pytest.raises(EmbeddedRedisError, match="not on PATH"):
        open_embedded_redis("server")


def test_a_server_that_fails_to_start_is_reported_or_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the socket folders go
    broken = tmp_path / "redis-server"
    broken.write_text("#!/bin/sh\necho 'FATAL CONFIG FILE ERROR' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(EmbeddedRedisError, match="exited with 1: FATAL CONFIG FILE ERROR"):
        open_embedded_redis("server", executable=str(broken))
    handle = open_embedded_redis("auto", executable=str(broken))
    assert isinstance(handle.client, fakeredis.FakeRedis)
    assert "uses the in-process fakeredis instead" in caplog.text
    with pytest.raises(EmbeddedRedisError, match="could not run"):
        start_server(str(tmp_path / "missing"))
    assert list(scratch.iterdir()) == []  # no socket folder left by the failed starts


@needs_redis_server
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_the_private_server_dies_with_a_killed_parent() -> None:
    """`kill -9` of `instyle serve` must not leave a redis-server behind."""
    script = textwrap.dedent(
        """
        import os, signal
        from instyle.embedded_redis import open_embedded_redis
        handle = open_embedded_redis("server")
        print(handle.process.pid, handle.folder, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    pid, folder = proc.stdout.split()
    try:
        assert _gone(int(pid))
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # what a killed server cannot remove itself
