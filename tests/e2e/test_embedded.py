"""`instyle serve` without INSTYLE_REDIS_URL: API + worker thread + in-process Redis, over HTTP."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from instyle.client import ServerError, submit
from tests.conftest import ASSET_PHOTOS
from tests.e2e.conftest import serve_embedded


@pytest.fixture
def embedded_server(tiny_store: Path, tmp_path: Path) -> Iterator[str]:
    with serve_embedded(tmp_path / "serve.log", INSTYLE_STORE=str(tiny_store)) as url:
        yield url


@pytest.mark.slow
def test_embedded_mode_whole_flow(embedded_server: str, tmp_path: Path) -> None:
    with urllib.request.urlopen(f"{embedded_server}/readyz", timeout=5) as r:
        ready = json.load(r)
    assert ready["status"] == "ready" and ready["checks"]["workers:stylize"]["ok"]

    photo = ASSET_PHOTOS / "skimage_chelsea.jpg"
    seen: list[str] = []
    image, content_type, job = submit(
        embedded_server, photo, {"style": "tiny", "max_size": "64"}, on_progress=lambda j: seen.append(j["status"])
    )
    assert content_type == "image/jpeg" and job["status"] == "finished" and seen[-1] == "finished"
    with Image.open(io.BytesIO(image)) as img:
        assert max(img.size) == 64

    with pytest.raises(ServerError, match="style_not_found"):
        submit(embedded_server, photo, {"style": "missing"})

    # ?wait= returns the image itself when the job finishes in time
    from tests.service.test_api import png

    boundary = "x1x2x3"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="style"\r\n\r\ntiny\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png((50, 40))
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        f"{embedded_server}/v1/stylize?wait=20", data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200 and r.headers["content-type"] == "image/jpeg"
        assert r.headers["x-job-id"]
        timing = r.headers["server-timing"]  # the generator's own time, e.g. "model;dur=12.34"
        assert timing.startswith("model;dur=") and float(timing.split("=")[1]) > 0
        status_url = f"{embedded_server}/v1/jobs/{r.headers['x-job-id']}"
    with urllib.request.urlopen(status_url, timeout=10) as r:
        assert json.loads(r.read())["detail"]["model_ms"] > 0


@pytest.mark.slow
def test_submit_cli_reports_problems(embedded_server: str, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    ok = subprocess.run(
        [sys.executable, "-m", "instyle.cli", "submit", str(ASSET_PHOTOS / "skimage_coffee.jpg"), "--style", "tiny",
         "--server", embedded_server, "--output", str(out), "--format", "png", "--max-size", "48"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    with Image.open(out) as img:
        assert img.format == "PNG" and max(img.size) == 48
    bad = subprocess.run(
        [sys.executable, "-m", "instyle.cli", "submit", str(ASSET_PHOTOS / "skimage_coffee.jpg"), "--style", "nope",
         "--server", embedded_server],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "style_not_found" in bad.stderr and "Traceback" not in bad.stderr
    # a photo the server refuses is exit 1, alone as in a batch (it was 2 alone, 1 in a batch);
    # without a terminal the job's progress is plain lines, not one line of redrawn bar frames
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    refused = subprocess.run(
        [sys.executable, "-m", "instyle.cli", "submit", str(text), "--style", "tiny", "--server", embedded_server],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1 and "unsupported_media_type" in refused.stderr, refused.stderr
    assert "\r" not in ok.stderr


@pytest.mark.slow
def test_submit_cli_sends_a_batch_and_reports_each_failure(tiny_store: Path, tmp_path: Path) -> None:
    photos = []
    for i, name in enumerate(["skimage_coffee.jpg", "skimage_chelsea.jpg", "skimage_astronaut.jpg"]):
        photo = tmp_path / f"p{i}{Path(name).suffix}"
        photo.write_bytes((ASSET_PHOTOS / name).read_bytes())
        photos.append(photo)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo at all")
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "instyle.cli", "submit"]
    with serve_embedded(tmp_path / "serve.log", INSTYLE_STORE=str(tiny_store)) as url:
        run = subprocess.run(
            [*cli, *map(str, [*photos, broken]), "--style", "tiny", "--server", url, "-o", str(out),
             "--max-size", "40", "--format", "png", "--jobs", "4"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        refused = subprocess.run(
            [*cli, *map(str, photos), "--style", "nope", "--server", url, "-o", str(tmp_path / "none")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        one_name = subprocess.run(  # three photos, one file name: refused (it made a folder "one.png")
            [*cli, *map(str, photos), "--style", "tiny", "--server", url, "-o", str(tmp_path / "one.png")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert one_name.returncode == 2 and "names one file, for 3 inputs" in one_name.stderr, one_name.stderr
        assert not (tmp_path / "one.png").exists()
        styles = [*cli[:-1], "styles", "--server", url]
        listed = subprocess.run(styles, capture_output=True, text=True, timeout=60)
        as_json = subprocess.run([*styles, "--json"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    assert "broken.jpg: failed: 415 unsupported_media_type" in run.stderr
    assert "instyle: 1 of 4 photos failed" in run.stderr and "Traceback" not in run.stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == ["p0-tiny.png", "p1-tiny.png", "p2-tiny.png"], run.stdout
    for name in written:
        with Image.open(out / name) as img:
            assert img.format == "PNG" and max(img.size) == 40
        assert f"-> {out / name} (job " in run.stdout
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.count("style_not_found") == 1, refused.stderr  # one error for the batch
    assert not (tmp_path / "none").exists()
    assert listed.returncode == 0 and listed.stdout.startswith("ID "), listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1::2]}
    assert rows["tiny"][1:4] == ["1", "johnson/instance", "no"] and rows["the-scream"][3] == "yes"
    assert {r["id"] for r in json.loads(as_json.stdout)} == set(rows)


@pytest.mark.slow
def test_submit_style_cli_trains_follows_and_publishes_a_style(
    tiny_store: Path, small_photos: Path, tmp_path: Path
) -> None:
    import shutil

    from tests.conftest import ASSET_STYLE

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    recipe = ["--iterations", "20", "--image-size", "32", "--style-size", "48", "--batch-size", "1", "--width", "0.25"]
    cli = [sys.executable, "-m", "instyle.cli"]
    env = {"INSTYLE_STORE": str(store), "INSTYLE_TRAIN_DATA": str(small_photos), "INSTYLE_API_KEYS": "k"}
    with serve_embedded(tmp_path / "serve.log", **env) as url:
        base = [*cli, "submit-style", str(ASSET_STYLE), "--server", url]
        keyless = subprocess.run([*base, "--name", "cli-made"], capture_output=True, text=True, timeout=60)
        trained = subprocess.run(
            [*base, "--name", "cli-made", "--title", "Made by the CLI", "--api-key", "k", *recipe,
             "--preview", str(tmp_path / "preview.jpg")],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        detached = subprocess.run(
            [*base, "--name", "cli-made", "--replace", "--detach", *recipe],
            capture_output=True, text=True, timeout=60, env={**os.environ, "INSTYLE_API_KEY": "k"},
        )  # fmt: skip
        used = subprocess.run(
            [*cli, "submit", str(ASSET_PHOTOS / "skimage_coffee.jpg"), "--style", "cli-made@1", "--server", url,
             "-o", str(tmp_path / "out.jpg"), "--max-size", "40"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert detached.returncode == 0, detached.stderr
        job = [*cli, "job", detached.stdout.strip()]
        looked = subprocess.run([*job, "--json"], capture_output=True, text=True, timeout=60)
        canceled = subprocess.run([*job, "--cancel"], capture_output=True, text=True, timeout=60)
        followed = subprocess.run([*job, "--follow"], capture_output=True, text=True, timeout=120)
        again = subprocess.run([*job, "--cancel"], capture_output=True, text=True, timeout=60)
        used_id = used.stdout.split("(job ")[-1].rstrip(")\n")
        by_id = subprocess.run(
            [*cli, "job", used_id, "--server", url, "-o", str(tmp_path / "again.jpg")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        misnamed = subprocess.run(  # a JPEG result saved under a PNG name: refused, nothing written
            [*cli, "job", used_id, "--server", url, "-o", str(tmp_path / "again.png")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert misnamed.returncode == 2 and "the job's result is JPEG; name a .jpg file" in misnamed.stderr
        assert not (tmp_path / "again.png").exists()
    second = json.loads(looked.stdout)
    assert keyless.returncode == 2 and "401 unauthorized" in keyless.stderr, keyless.stderr
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.startswith("published cli-made@1 (job ") and "final loss" in trained.stdout
    assert "queued cli-made: " in trained.stderr and "(iterations 20, image_size 32, batch_size 1)" in trained.stderr
    assert "20/20" in trained.stderr  # the bar followed the iterations to the end
    with Image.open(tmp_path / "preview.jpg") as img:
        assert img.format == "JPEG"
    assert detached.returncode == 0 and detached.stdout.strip().startswith(f"{url}/v1/jobs/"), detached.stderr
    assert second["type"] == "train" and second["status"] in ("queued", "started")
    assert canceled.returncode == 0 and canceled.stdout.startswith(f"canceled {second['id']}"), canceled.stderr
    assert followed.returncode == 1 and " train canceled " in followed.stdout, followed.stdout + followed.stderr
    assert again.returncode == 2 and "409 job_not_cancelable" in again.stderr
    assert used.returncode == 0, used.stderr
    assert by_id.returncode == 0 and " stylize finished 100 %" in by_id.stdout, by_id.stderr
    assert (tmp_path / "again.jpg").read_bytes() == (tmp_path / "out.jpg").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["server", "memory"])
def test_each_redis_backend_serves_and_shuts_down_cleanly(backend: str, tiny_store: Path, tmp_path: Path) -> None:
    """INSTYLE_EMBEDDED_REDIS=server (a private redis-server child) and =memory (fakeredis) both
    stylize; SIGTERM then stops the worker threads and the child, with no traceback."""
    import re
    import shutil

    if backend == "server" and shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    log = tmp_path / "serve.log"
    with serve_embedded(log, INSTYLE_STORE=str(tiny_store), INSTYLE_EMBEDDED_REDIS=backend) as url:
        image, content_type, _ = submit(url, ASSET_PHOTOS / "skimage_chelsea.jpg", {"style": "tiny", "max_size": "32"})
        assert content_type == "image/jpeg" and image[:2] == b"\xff\xd8"
    text = log.read_text()
    banner = text.splitlines()[0]
    if backend == "server":
        found = re.search(r"private redis-server [\d.]+ on (\S+?)[,)]", banner)
        assert found, banner
        assert not Path(found.group(1)).parent.exists()  # the child's socket folder is gone with it
    else:
        assert "in-process fakeredis" in banner
    assert "Finished server process" in text and "Traceback" not in text and "StopRequested" not in text


@pytest.mark.slow
def test_the_server_stops_when_its_private_redis_dies(tiny_store: Path, tmp_path: Path) -> None:
    """A private redis-server killed under the server took every job with it, and the server
    answered 503 for good while /healthz said 200: it stops instead, exit 1, saying why."""
    import re
    import shutil
    import signal

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    log = tmp_path / "serve.log"
    server: list[subprocess.Popen[bytes]] = []
    with serve_embedded(log, server.append, INSTYLE_STORE=str(tiny_store), INSTYLE_EMBEDDED_REDIS="server"):
        found = re.search(r"private redis-server [\d.]+ on (\S+?)[,)]", log.read_text().splitlines()[0])
        assert found, log.read_text()
        pids = subprocess.run(["pgrep", "-f", found.group(1)], capture_output=True, text=True).stdout.split()
        assert len(pids) == 1, pids
        os.kill(int(pids[0]), signal.SIGKILL)
        assert server[0].wait(timeout=30) == 1
    text = log.read_text()
    assert "instyle serve: stopped: the private redis-server exited (-9)" in text
    assert "Traceback" not in text and "still busy" not in text
