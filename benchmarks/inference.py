"""Inference benchmark: eager float32 vs ONNX Runtime vs the worker's path, side by side.

    python benchmarks/inference.py                       # both generators, 256..4096 px, CPU
    python benchmarks/inference.py --sizes 256,512 --archs johnson --runs 3

For each generator (Johnson: the shipped starry-night artifact; Ulyanov: the shipped
starry-night-ulyanov artifact, or with ``--ulyanov-model`` another trained one, e.g. a folder
``instyle train --arch ulyanov`` published, or ``untrained``, a seeded untrained net) and each
square size it runs, each in a fresh process so that peak RSS is the path's own:

* ``eager``: the float32 ``nn.Module`` under ``torch.inference_mode`` -- what peers ship;
* ``onnxruntime``: the same weights exported to ONNX, run by ONNX Runtime's CPU provider;
* ``worker``: the TorchScript artifact loaded the way the worker loads it
  (``stylenet.fast.load_engine``) and run the way it runs it (``stylenet.inference.run_generator``,
  tiled above the worker's default threshold).

It reports the median latency over ``--runs`` timed runs after a warm-up, images/s, GFLOP/s
(the convolutions' multiply-adds x 2), peak RSS, and the PSNR of each path's output against
the eager float32 output, on a real photo. It prints a table and writes JSON (``--out``).
Needs ``onnxruntime`` and ``onnx`` (``pip install -e ".[bench]"``) for the ONNX path.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.memory import peak_rss_mb  # noqa: E402
from benchmarks.options import positive_int, positive_ints  # noqa: E402
from stylenet.buffers import capacity_from  # noqa: E402
from stylenet.config import PRECISIONS, GeneratorConfig, tune_malloc, use_huge_pages  # noqa: E402
from stylenet.export import export_generator, load_generator_bytes, psnr  # noqa: E402
from stylenet.fast import cpu_has_native_bf16, eager_from, load_engine, prepare_device  # noqa: E402
from stylenet.generator import build_generator  # noqa: E402
from stylenet.imageio import image_to_tensor, load_image  # noqa: E402
from stylenet.inference import run_generator, tiled_engine  # noqa: E402
from stylenet.tiling import tile_threshold  # noqa: E402
from worker.settings import WorkerSettings  # noqa: E402

PATHS = ("eager", "onnxruntime", "worker")
#: The default paths with ``--device cuda`` (ONNX Runtime's CPU provider has no place there).
CUDA_PATHS = ("eager", "eager-fp16", "worker", "worker-nograph")
#: Also accepted by --paths: the worker's engine with tiling off, to show what tiling saves;
#: ``compile``: torch.compile (inductor, max-autotune) of the fp16 channels-last eager module.
EXTRA_PATHS = ("worker-untiled", "compile")
SHIPPED = REPO / "model_store" / "shipped" / "starry-night" / "1"
SHIPPED_ULYANOV = REPO / "model_store" / "shipped" / "starry-night-ulyanov" / "1"
PHOTO = REPO / "instyle" / "assets" / "photos" / "skimage_astronaut.jpg"


# ---------------------------------------------------------------- models and inputs


def ulyanov_source(text: str) -> Path | None:
    """``--ulyanov-model``: a trained style's version folder, or None for ``untrained``."""
    return None if text == "untrained" else Path(text)


def prepare_models(work: Path, archs: list[str], ulyanov_model: Path | None = SHIPPED_ULYANOV) -> dict[str, Path]:
    """A model folder per arch: generator.ts (the artifact) and generator.json (its config).
    ``ulyanov_model``: a trained Ulyanov style's version folder; None: a seeded untrained net."""
    out = {}
    for arch in archs:
        folder = work / arch
        folder.mkdir(parents=True, exist_ok=True)
        trained = SHIPPED if arch == "johnson" else ulyanov_model
        if trained is not None:
            manifest = json.loads((trained / "manifest.json").read_text())
            if manifest["generator"]["arch"] != arch:
                raise SystemExit(f"{trained}: a {manifest['generator']['arch']} generator, not {arch}")
            (folder / "generator.ts").write_bytes((trained / "generator.ts").read_bytes())
            cfg = manifest["generator"]
        else:
            config = GeneratorConfig(arch="ulyanov", norm="instance")
            torch.manual_seed(0)
            export_generator(build_generator(config).eval(), folder / "generator.ts")
            cfg = config.to_dict()
        (folder / "generator.json").write_text(json.dumps(cfg))
        out[arch] = folder
    return out


def photo(size: int) -> torch.Tensor:
    """The benchmark photo, centre-cropped square and resized to ``size`` (1, 3, size, size)."""
    img = load_image(PHOTO)
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((size, size))
    return image_to_tensor(img).unsqueeze(0)


def mosaic(size: int, tile: int = 256) -> torch.Tensor:
    """A (1, 3, size, size) image of ``tile``-px crops of the bundled photos at their *native*
    resolution (crop offsets and mirroring vary per tile): pixel-level detail like a real photo
    of that size, where ``photo(size)`` enlarges one 512-px photo (8x at 4096²)."""
    photos = [load_image(p) for p in sorted(PHOTO.parent.glob("*.jpg"))]
    canvas = Image.new("RGB", (size, size))
    k = 0
    for top in range(0, size, tile):
        for left in range(0, size, tile):
            img = photos[k % len(photos)]
            dx = (k * 37) % (img.width - tile + 1)
            dy = (k * 23) % (img.height - tile + 1)
            crop = img.crop((dx, dy, dx + tile, dy + tile))
            if (k // len(photos)) % 2:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            canvas.paste(crop, (left, top))
            k += 1
    return image_to_tensor(canvas).unsqueeze(0)


IMAGES = ("enlarged", "mosaic", "flat")
#: What each ``--image`` is, as the results record it.
IMAGE_DESCRIPTIONS = {
    "enlarged": PHOTO.name,
    "mosaic": "mosaic of instyle/assets/photos",
    "flat": "uniform grey 128/255",
}
ARCHS = ("johnson", "ulyanov")


def archs_option(text: str) -> list[str]:
    """``--archs``: comma-separated, each one of ``ARCHS``."""
    archs = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHS]
    if not archs or unknown:
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(ARCHS)}, got {text!r}")
    return archs


def add_image_option(p: argparse.ArgumentParser) -> None:
    """``--image``: which test image the benchmarks run at each size (``bench_image``)."""
    p.add_argument(
        "--image", choices=IMAGES, default="enlarged",
        help="enlarged: the benchmark photo resized to each size; mosaic: native-resolution 256-px crops "
        "of the bundled photos, the pixel-level detail of a real photo that large; flat: one mid-grey, "
        "no detail at all (where instance norm has only rounding to normalize)",
    )  # fmt: skip


def bench_image(kind: str, size: int) -> torch.Tensor:
    """The (1, 3, size, size) test image of ``kind`` (one of ``IMAGES``)."""
    if kind == "flat":
        return torch.full((1, 3, size, size), 128 / 255)
    return photo(size) if kind == "enlarged" else mosaic(size)


def conv_gflop(cfg: GeneratorConfig, size: int) -> float:
    """Convolution FLOPs (2 x multiply-adds) of one image at ``size``², counted on the meta device."""
    total = 0

    def hook(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        conv = module
        assert isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d))
        k = conv.kernel_size[0] * conv.kernel_size[1]
        spatial = out.shape[2] * out.shape[3] if isinstance(conv, nn.Conv2d) else _inp[0].shape[2] * _inp[0].shape[3]
        total += 2 * k * (conv.in_channels // conv.groups) * conv.out_channels * spatial

    meta = build_generator(cfg).to("meta")
    handles = [m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    meta(torch.empty(1, 3, size, size, device="meta"))
    for h in handles:
        h.remove()
    return total / 1e9


# ---------------------------------------------------------------- one measurement (child process)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Any, runs: int, budget_s: float, device: torch.device) -> tuple[Any, list[float]]:
    """The last run's output (kept for PSNR) and the timed runs' seconds, after a warm-up.

    Only one output is alive at a time: each run's is let go before the next starts, so that
    the peak RSS is one pass's (the warm-up's output kept through the timed runs added a whole
    picture to every path's peak, 201 MB at 4096² in float32)."""
    fn()  # warm-up
    _sync(device)
    out: Any = None
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs and (not times or time.perf_counter() - start < budget_s):
        out = None
        t = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return (fn() if out is None else out), times


def measure(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(args.model_dir)
    cfg = GeneratorConfig.from_dict(json.loads((folder / "generator.json").read_text()))
    artifact = (folder / "generator.ts").read_bytes()
    device = torch.device(args.device)
    x = bench_image(args.image, args.size).to(device)
    setup = time.perf_counter()
    if args.path == "eager":
        model = eager_from(load_generator_bytes(artifact), cfg).to(device)

        def fn() -> torch.Tensor:
            with torch.inference_mode():
                return model(x)

    elif args.path in ("eager-fp16", "compile"):
        # what a peer gets from a few lines on a GPU: half precision, channels-last, cuDNN autotune
        prepare_device(device)
        half = eager_from(load_generator_bytes(artifact), cfg).to(device, torch.float16)
        half = half.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        runner: Any = torch.compile(half, mode="max-autotune") if args.path == "compile" else half
        xh = x.half().contiguous(memory_format=torch.channels_last)

        def fn() -> torch.Tensor:
            with torch.inference_mode():
                return runner(xh)

    elif args.path == ONNX_EXPORT:
        # a process of its own: the export traces a whole pass, and its peak RSS (more than ONNX
        # Runtime's own: 1137 against 723 MB at 512²) was reported as ONNX Runtime's
        eager = eager_from(load_generator_bytes(artifact), cfg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_args: dict[str, Any] = {"dynamo": False, "input_names": ["image"], "opset_version": 17}
            torch.onnx.export(eager, (x.cpu(),), str(onnx_file(args)), **export_args)
        return {"exported": str(onnx_file(args))}
    elif args.path == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(onnx_file(args)), options, providers=["CPUExecutionProvider"])
        feed = {"image": x.cpu().numpy()}

        def fn() -> torch.Tensor:
            return torch.from_numpy(session.run(None, feed)[0])

    else:
        prepare_device(device)
        graphs = args.path != "worker-nograph"
        engine = load_engine(artifact, cfg.to_dict(), device, args.precision, cuda_graphs=graphs)
        settings = WorkerSettings()
        tile_pixels = tile_threshold(settings.tile_megapixels, device) if args.path != "worker-untiled" else None

        def fn() -> torch.Tensor:
            with torch.inference_mode():
                return run_generator(engine, x, tile_pixels)

    setup_s = time.perf_counter() - setup
    out, times = _timed(fn, args.runs, args.budget, device)
    if args.path == "eager" and device.type == "cuda":
        # the PSNR reference in strict float32 (cuDNN's default TF32 convolutions are for speed)
        torch.backends.cudnn.allow_tf32 = False
        out = fn()
    torch.save(out.float().cpu(), args.output)
    info: dict[str, Any] = {
        "median_ms": statistics.median(times) * 1000,
        "runs": len(times),
        "times_ms": [round(t * 1000, 2) for t in times],
        "setup_s": round(setup_s, 3),
        "peak_rss_mb": peak_rss_mb(),
    }
    if args.path.startswith("worker"):
        # no fast engine (load_engine serves the artifact as is then): said, not called fp32
        info["precision"] = getattr(engine, "precision", "TorchScript module")
        residuals = getattr(engine, "residual_precision", info["precision"])  # a Johnson engine's blocks
        if residuals != info["precision"]:
            info["residual_precision"] = residuals
        info["engine"] = type(engine).__name__
        info["tiled"] = tiled_engine(engine, args.size**2, tile_pixels) is not None
    if device.type == "cuda":
        info["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return info


# ---------------------------------------------------------------- the driver


#: The variables that cap the instruction set torch, oneDNN and MKL run (``machine``).
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def native_info() -> dict[str, Any]:
    """Whether the native kernels run here (``stylenet.native``), from where, built how."""
    from stylenet import native

    kernels = native.library()
    return {"library": str(kernels.path) if kernels else None, "cflags": " ".join(native.cflags())}


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        # the worker path's buffer arena (stylenet.buffers; INSTYLE_BUFFER_POOL_MB, 0 = off)
        "buffer_pool_mb": capacity_from() >> 20,
        # the vector unit torch's kernels run on, and the variables that cap it:
        # ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 make an
        # AVX-512 machine run AVX2 code (MKL's matrix products too, on an Intel CPU)
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_caps": {k: os.environ[k] for k in ISA_CAPS if k in os.environ},
        # what auto precision asks: oneDNN's bf16 support and the CPU's bf16 instructions
        # (oneDNN alone says yes on any AVX-512 CPU, and emulates bf16 there)
        "native_bf16": cpu_has_native_bf16(),
        # the native kernels (stylenet.native): the library, and the flags it was built with
        "native": native_info(),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


#: The child step before an ``onnxruntime`` measurement: the ONNX file, exported in a process of
#: its own.
ONNX_EXPORT = "onnx-export"


def onnx_file(args: argparse.Namespace) -> Path:
    return Path(args.model_dir) / f"generator-{args.size}.onnx"


def run_child(args: argparse.Namespace, arch: str, path: str, size: int, folder: Path, out: Path) -> dict[str, Any]:
    if path == "onnxruntime":
        exported = run_child(args, arch, ONNX_EXPORT, size, folder, out)
        if "error" in exported:
            return {"error": f"ONNX export: {exported['error']}"}
    cmd = [
        sys.executable, __file__, "--child", "--arch", arch, "--path", path, "--size", str(size),
        "--model-dir", str(folder), "--output", str(out), "--runs", str(args.runs), "--budget", str(args.budget),
        "--device", args.device, "--precision", args.precision, "--image", args.image,
    ]  # fmt: skip
    env = dict(os.environ)
    if path.startswith("worker"):
        use_huge_pages(env)  # as `instyle worker` runs (the baselines run as their users would)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"error": f"exit {proc.returncode}: {tail[0][:200]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: The path each device's worker speed-up is quoted against: the fastest thing a peer ships.
BASELINE = {"cpu": "onnxruntime", "cuda": "eager-fp16"}


def table(rows: list[dict[str, Any]], baseline: str = "onnxruntime") -> str:
    gpu = any("peak_cuda_mb" in r for r in rows)
    memory = "peak GPU MB" if gpu else "peak RSS MB"
    columns = ("generator", "size", "path", "median ms", "images/s", "GFLOP/s", memory, "PSNR vs eager dB")
    lines = ["| " + " | ".join((*columns, f"vs {baseline}")) + " |", "|" + "---|" * 9]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['arch']} | {r['size']}² | {r['path']} | {r['error']} | | | | | |")
            continue
        speedup = f"{r['speedup']:.2f}x" if r.get("speedup") else ""
        path = r["path"]
        if path.startswith("worker"):
            notes = [r["precision"]]
            notes += [f"{r['residual_precision']} residuals"] if r.get("residual_precision") else []
            notes += ["tiled"] if r.get("tiled") else []
            path += f" ({', '.join(notes)})"
        ms = r["median_ms"]
        lines.append(
            f"| {r['arch']} | {r['size']}² | {path} | {ms:.0f} | {1000 / ms:.2f} "
            if ms >= 10
            else f"| {r['arch']} | {r['size']}² | {path} | {ms:.2f} | {1000 / ms:.0f} "
        )
        lines[-1] += (
            f"| {r['gflop'] / ms * 1000:.0f} | {r['peak_cuda_mb' if gpu else 'peak_rss_mb']:.0f} "
            f"| {r.get('psnr_db', '')} | {speedup} |"
        )
    return "\n".join(lines)


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be measured on this machine (None: it can): every measurement would
    otherwise start, fail and leave a table of errors."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        return f"--device {device}: {exc}"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device}: this torch sees no CUDA device (torch {torch.__version__})"
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        return f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    if dev.type not in ("cpu", "cuda"):
        return f"--device {device}: only cpu and cuda are measured"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=positive_ints, default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--archs", type=archs_option, default=["johnson", "ulyanov"])
    p.add_argument("--paths", default=None, help=f"default: {','.join(PATHS)} (cpu), {','.join(CUDA_PATHS)} (cuda)")
    p.add_argument("--runs", type=positive_int, default=5, help="timed runs after the warm-up (fewer past --budget)")
    p.add_argument("--budget", type=float, default=20.0, help="seconds of timed runs per measurement, at most")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement before it counts as failed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="the worker path's precision (fp16: CUDA)")
    p.add_argument(
        "--ulyanov-model", type=ulyanov_source, default=SHIPPED_ULYANOV,
        help="a trained Ulyanov style's version folder (generator.ts, manifest.json; default: the shipped "
        "starry-night-ulyanov), or 'untrained' for a seeded untrained net",
    )  # fmt: skip
    add_image_option(p)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "inference-cpu.json")
    # child mode
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--arch", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        if args.path.startswith("worker"):
            tune_malloc()  # as `instyle worker` runs
        print(json.dumps(measure(args)))
        return 0

    sizes, archs = args.sizes, args.archs
    cuda = args.device.startswith("cuda")
    if problem := device_problem(args.device):
        p.error(problem)
    if args.precision == "fp16" and not cuda:
        p.error("--precision fp16 is for CUDA devices; on a CPU use auto, bf16 or fp32")
    paths = [q for q in (args.paths or ",".join(CUDA_PATHS if cuda else PATHS)).split(",") if q]
    unknown = set(paths) - set(PATHS) - set(CUDA_PATHS) - set(EXTRA_PATHS)
    if unknown:
        p.error(f"unknown paths: {', '.join(sorted(unknown))}")
    if not cuda and {"eager-fp16", "compile"} & set(paths):
        p.error("eager-fp16 and compile are CUDA paths")
    if cuda and "onnxruntime" in paths:
        paths.remove("onnxruntime")  # the CPU provider only; GPU runs compare eager and worker
    baseline = BASELINE["cuda" if cuda else "cpu"]
    rows: list[dict[str, Any]] = []
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="instyle-bench-") as tmp:
        work = Path(tmp)
        folders = prepare_models(work, archs, args.ulyanov_model)
        for arch in archs:
            cfg = GeneratorConfig.from_dict(json.loads((folders[arch] / "generator.json").read_text()))
            for size in sizes:
                gflop = conv_gflop(cfg, size)
                outputs: dict[str, Path] = {}
                group: list[dict[str, Any]] = []
                for path in paths:
                    out = work / f"{arch}-{path}-{size}.pt"
                    print(f"[{arch} {size}² {path}] ...", file=sys.stderr, flush=True)
                    try:
                        res = run_child(args, arch, path, size, folders[arch], out)
                    except subprocess.TimeoutExpired:
                        res = {"error": f"over {args.timeout:.0f} s"}
                    row = {"arch": arch, "size": size, "path": path, "gflop": round(gflop, 3), **res}
                    if "error" not in res:
                        outputs[path] = out
                    group.append(row)
                ref = torch.load(outputs["eager"]) if "eager" in outputs else None
                base_ms = next((r["median_ms"] for r in group if r["path"] == baseline and "error" not in r), None)
                for row in group:
                    if "error" in row:
                        continue
                    if ref is not None and row["path"] != "eager":
                        row["psnr_db"] = round(psnr(torch.load(outputs[row["path"]]), ref), 2)
                    if base_ms and row["path"] not in ("eager", baseline):
                        row["speedup"] = round(base_ms / row["median_ms"], 2)
                    row["images_per_s"] = round(1000 / row["median_ms"], 3)
                    row["gflop_per_s"] = round(row["gflop"] / row["median_ms"] * 1000, 1)
                    row["median_ms"] = round(row["median_ms"], 2)
                    row["peak_rss_mb"] = round(row["peak_rss_mb"], 1)
                for path in outputs.values():
                    path.unlink(missing_ok=True)
                rows.extend(group)
                print("\n".join(table(group, baseline).splitlines()[2:]), file=sys.stderr, flush=True)
    result = {
        "benchmark": "inference",
        "command": "python benchmarks/inference.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "models": {
            arch: str(SHIPPED.relative_to(REPO))
            if arch == "johnson"
            else (str(args.ulyanov_model) if args.ulyanov_model is not None else "untrained (seed 0)")
            for arch in archs
        },
        "photo": IMAGE_DESCRIPTIONS[args.image],
        "speedup_vs": baseline,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows, baseline))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
