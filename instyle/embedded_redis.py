"""The Redis of embedded mode (``instyle serve`` without ``INSTYLE_REDIS_URL``).

Two backends, chosen by ``INSTYLE_EMBEDDED_REDIS`` (``ServiceSettings.embedded_redis``):

* ``server``: a private ``redis-server`` child process, listening on a Unix socket in a fresh
  temporary folder only this user can enter, with no TCP port, no persistence, and a
  parent-death signal, so it ends with the server even when the server is killed outright.
* ``memory``: an in-process fake (``fakeredis``), for machines without ``redis-server``.

``auto`` (the default) takes ``server`` when ``redis-server`` (5.0 or newer: RQ needs
streams) is on ``PATH`` and starts, and ``memory`` otherwise, saying why in the log. With the
child, the job bookkeeping (~90 commands per stylize job, most of them RQ's) runs on the same
Redis as a production deployment and outside this process's GIL; the fake runs each command
in Python and wakes every blocked reader on every write. Throughput was the same within the
noise on a 2-core machine (docs/performance.md, service section): the child is for parity.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from instyle.env import EmbeddedRedisMode

log = logging.getLogger(__name__)

#: Oldest redis-server embedded mode runs on (RQ records job results in streams: Redis 5).
MIN_SERVER_MAJOR = 5
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class EmbeddedRedisError(RuntimeError):
    """The private redis-server was asked for and could not be started."""


@dataclass
class EmbeddedRedis:
    """The client every embedded component shares, what backs it, and how to stop it."""

    client: Redis
    #: e.g. ``private redis-server 7.0.15 on /tmp/instyle-redis-x/redis.sock`` (``redis-cli -s``
    #: reaches it) or ``in-process fakeredis``
    description: str
    process: subprocess.Popen[bytes] | None = None
    folder: Path | None = None
    #: How other processes reach it (``unix://...``); None for the in-process fakeredis.
    url: str | None = None
    _closed: bool = field(default=False, repr=False)

    @property
    def closed(self) -> bool:
        """``close`` was called: the child's exit from then on is expected."""
        return self._closed

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the child (SIGTERM, then SIGKILL after ``timeout_s``) and remove its folder."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RedisError, OSError):
            self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGTERM the child when its parent dies (else None)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return preexec


def start_server(executable: str, timeout_s: float = 10.0) -> EmbeddedRedis:
    """Start a private ``redis-server`` on a Unix socket and wait until it answers PING.

    Raises ``EmbeddedRedisError`` when it exits, does not answer within ``timeout_s``, or is
    older than Redis ``MIN_SERVER_MAJOR``; nothing is left behind then.
    """
    folder = Path(tempfile.mkdtemp(prefix="instyle-redis-"))  # mode 0700: only this user connects
    socket_path = folder / "redis.sock"
    cmd = [
        executable, "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
        "--save", "", "--appendonly", "no", "--dir", str(folder), "--daemonize", "no", "--loglevel", "warning",
    ]  # fmt: skip
    try:
        # preexec_fn before any thread runs (cmd_serve starts this first): the parent-death signal
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=die_with_parent(), close_fds=True,
            start_new_session=True,  # a terminal's Ctrl-C reaches the server, which then stops the child last
        )  # fmt: skip
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise EmbeddedRedisError(f"could not run {executable}: {exc}") from None
    client = Redis(unix_socket_path=str(socket_path))
    handle = EmbeddedRedis(client=client, description="private redis-server", process=proc, folder=folder)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise EmbeddedRedisError(f"{executable} exited with {proc.returncode}: {err[-500:] or 'no output'}")
            try:
                client.ping()
                break
            except RedisError:
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError(f"{executable} did not answer within {timeout_s:g} s") from None
                time.sleep(0.02)
        version = str(client.info("server").get("redis_version", "0"))
        if int(version.split(".")[0]) < MIN_SERVER_MAJOR:
            raise EmbeddedRedisError(f"{executable} is Redis {version}; embedded mode needs {MIN_SERVER_MAJOR}.0+")
    except BaseException:
        handle.close()
        raise
    if proc.stderr is not None:  # nothing reads it from here on: a full pipe must never block redis
        proc.stderr.close()
    handle.description = f"private redis-server {version} on {socket_path}"
    handle.url = f"unix://{socket_path}"
    return handle


def in_memory() -> EmbeddedRedis:
    import fakeredis

    return EmbeddedRedis(client=fakeredis.FakeRedis(server=fakeredis.FakeServer()), description="in-process fakeredis")


def open_embedded_redis(mode: EmbeddedRedisMode = "auto", executable: str | None = None) -> EmbeddedRedis:
    """The embedded mode's Redis for ``mode`` (module docstring). ``executable``: default from PATH."""
    if mode == "memory":
        return in_memory()
    exe = executable or shutil.which("redis-server")
    if exe is None:
        if mode == "server":
            raise EmbeddedRedisError("INSTYLE_EMBEDDED_REDIS=server, but redis-server is not on PATH")
        log.info("redis-server is not on PATH: embedded mode uses the in-process fakeredis")
        return in_memory()
    try:
        return start_server(exe)
    except EmbeddedRedisError as exc:
        if mode == "server":
            raise
        log.warning("%s; embedded mode uses the in-process fakeredis instead", exc)
        return in_memory()
