"""Shared fixtures: tiny photos, a tiny stand-in for VGG, paths of bundled assets."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
ASSET_PHOTOS = REPO / "instyle" / "assets" / "photos"
ASSET_STYLE = REPO / "instyle" / "assets" / "styles" / "starry_night.jpg"


def pytest_configure(config: pytest.Config) -> None:
    """The native kernels (``stylenet.native``) are built into the temp folder, not the user's
    cache, once for every test session and the servers they start (the key names the source)."""
    import os
    import tempfile

    os.environ.setdefault(
        "INSTYLE_NATIVE_DIR", str(Path(tempfile.gettempdir()) / f"instyle-native-tests-{os.getuid()}")
    )


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """Each test leaves the root logger as it found it. The CLI's commands install a stderr
    handler (``instyle.logs.configure``, ``logging.basicConfig``) bound to the stream of the
    moment: pytest's capture, closed once that test ends, so every later log line (httpx's,
    RQ's) printed a "Logging error" traceback into the next failure's report."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class TinyFeatures(nn.Module):
    """A stand-in feature extractor with VGG's default layer names, random frozen weights."""

    names = ("relu1_1", "relu2_1", "relu2_2", "relu3_1", "relu4_1")

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        chans = [3, 8, 8, 8, 16, 16]
        strides = [1, 2, 1, 2, 2]
        self.convs = nn.ModuleList()
        for i, stride in enumerate(strides):
            conv = nn.Conv2d(chans[i], chans[i + 1], 3, stride=stride, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3)
                conv.bias.zero_()
            self.convs.append(conv)
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        x = images
        for name, conv in zip(self.names, self.convs, strict=True):
            x = torch.relu(conv(x))
            if name in layers:
                out[name] = x
        return out


@pytest.fixture
def tiny_extractor() -> TinyFeatures:
    return TinyFeatures()


@pytest.fixture(scope="session")
def small_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled photos downscaled to 96 px (fast to decode and crop)."""
    folder = tmp_path_factory.mktemp("photos")
    for path in sorted(ASSET_PHOTOS.glob("*.jpg")):
        img = Image.open(path).convert("RGB")
        img.thumbnail((96, 96))
        img.save(folder / path.name, quality=90)
    return folder


@pytest.fixture(scope="session")
def style_image() -> Image.Image:
    img = Image.open(ASSET_STYLE).convert("RGB")
    img.thumbnail((64, 64))
    return img


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free port for the whole session (hermetic: nothing on 6379)."""
    import shutil
    import subprocess
    import time

    import redis

    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's Redis, flushed before each test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushall()
    yield redis_server
    client.flushall()


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable store holding style ``tiny`` (an untrained small Johnson generator, exported
    and published through the real code path)."""
    from model_store.catalog import StyleStore
    from model_store.manifest import StyleManifest
    from stylenet.config import GeneratorConfig
    from stylenet.export import ARTIFACT_FILE, export_generator
    from stylenet.generator import build_generator

    root = tmp_path_factory.mktemp("store")
    cfg = GeneratorConfig(width=0.25, residual_blocks=1)
    torch.manual_seed(0)
    model = build_generator(cfg).eval()
    work = tmp_path_factory.mktemp("export")
    export_generator(model, work / ARTIFACT_FILE)
    preview = Image.new("RGB", (8, 8), (200, 100, 50))
    buf = io.BytesIO()
    preview.save(buf, "JPEG")
    manifest = StyleManifest(id="tiny", title="Tiny", generator=cfg.to_dict(), norm=cfg.norm)
    StyleStore(root).publish(
        manifest, {ARTIFACT_FILE: work / ARTIFACT_FILE, "preview.jpg": buf.getvalue(), "style.jpg": buf.getvalue()}
    )
    return root


@pytest.fixture
def small_arena(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The process's buffer arena (``stylenet.buffers``), 64 MiB for buffers of 4 KB and more:
    the engines' test sizes use it."""
    from stylenet import buffers

    pool = buffers.BufferPool(64 << 20, min_bytes=4096)
    monkeypatch.setattr(buffers, "_pool", pool)
    monkeypatch.setattr(buffers, "_configured", True)
    yield pool
