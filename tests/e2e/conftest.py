"""`instyle serve` (embedded mode) as a subprocess on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import free_port


@contextmanager
def serve_embedded(
    log_path: Path, on_start: Callable[[subprocess.Popen[bytes]], object] | None = None, **env_overrides: str
) -> Iterator[str]:
    """Start `instyle serve` with ``INSTYLE_*`` taken only from ``env_overrides``; yield its URL
    once /healthz answers; stop it afterwards. The server's output goes to ``log_path``;
    ``on_start`` is given its process."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTYLE_")} | env_overrides
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "instyle.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        if on_start is not None:
            on_start(proc)
        try:
            for _ in range(300):
                if proc.poll() is not None:
                    pytest.fail(f"instyle serve exited: {log_path.read_text()}")
                try:
                    with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                        break
                except (urllib.error.URLError, OSError):
                    time.sleep(0.1)
            else:
                pytest.fail("instyle serve did not come up")
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)
