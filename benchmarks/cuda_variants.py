"""GPU variants of the Johnson engine, side by side in one process (for a short GPU lease).

    python benchmarks/cuda_variants.py --sizes 1024 --out benchmarks/results/cuda-variants.json

For each size it times (CUDA events, median of ``--runs`` replays after warm-up) and checks
(PSNR against strict-float32 eager) these variants of the shipped starry-night generator:

* ``engine-fp16-graph``: the worker's path (``stylenet.fast`` engine in fp16 + CUDA graph);
* ``engine-fp16-graph-packed``: the same with the CPU's packed output convolution (the 9x9
  32 -> 3 convolution as a 5x5 128 -> 16 one on the last decoder stage's phases), off on
  CUDA by default until measured;
* ``engine-fp16-graph-packed-shifted``: the same again with the CPU's upsampling convolutions
  (one 2x2 convolution of the four phases' taps instead of 3x3 phase kernels, each phase read
  where it lies in its output), also off on CUDA until measured;
* ``engine-bf16-graph``: the same in bfloat16;
* ``engine-fp16-compile``: ``torch.compile`` of the fp16 engine (inductor fuses the
  normalization, ReLU and padding passes), then graphed;
* ``eager-fp16-max-autotune``: ``torch.compile(mode="max-autotune")`` of the fp16
  channels-last eager module, the strongest thing a peer gets from one line;

and prints where the graphed fp16 engine spends its GPU time (torch profiler, by kernel).
Variants that fail are reported, not fatal. ``--deadline`` skips variants once the run has
taken that many seconds (compilation can be slow).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.inference import SHIPPED, photo  # noqa: E402
from stylenet.config import GeneratorConfig  # noqa: E402
from stylenet.cudagraph import GraphedEngine  # noqa: E402
from stylenet.export import load_generator_bytes, psnr  # noqa: E402
from stylenet.fast import JohnsonEngine, eager_from, optimize, prepare_device  # noqa: E402
from stylenet.johnson import JohnsonBody  # noqa: E402


def time_cuda(fn: Callable[[], object], runs: int) -> float:
    """Median milliseconds of ``fn`` over ``runs`` calls, timed with CUDA events."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def kernel_table(fn: Callable[[], object], top: int = 15) -> str:
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
    return str(prof.key_averages().table(sort_by="cuda_time_total", row_limit=top))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1024")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--deadline", type=float, default=360.0)
    p.add_argument("--variants", default=None, help="comma-separated subset (default: all)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cuda-variants.json")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA device")
    began = time.perf_counter()
    device = torch.device("cuda")
    prepare_device(device)
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    cfg = GeneratorConfig.from_dict(manifest["generator"])
    model = load_generator_bytes((SHIPPED / "generator.ts").read_bytes())
    eager = eager_from(model, cfg).to(device)
    rows: list[dict[str, Any]] = []
    for size in [int(s) for s in args.sizes.split(",")]:
        x = photo(size).to(device)
        torch.backends.cudnn.allow_tf32 = False
        with torch.inference_mode():
            ref = eager(x).float().cpu()
        torch.backends.cudnn.allow_tf32 = True

        def fp16() -> Callable[[torch.Tensor], torch.Tensor]:
            return GraphedEngine(optimize(model, cfg, device, "fp16"))

        def packed(shifted_phases: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
            body = eager_from(model, cfg).to(device).body
            assert isinstance(body, JohnsonBody)
            half = torch.float16
            engine = JohnsonEngine(body, cfg.padding, half, device, packed_output=True, shifted_phases=shifted_phases)
            return GraphedEngine(engine)

        def bf16() -> Callable[[torch.Tensor], torch.Tensor]:
            return GraphedEngine(optimize(model, cfg, device, "bf16"))

        def compiled() -> Callable[[torch.Tensor], torch.Tensor]:
            engine = optimize(model, cfg, device, "fp16")
            engine.forward = torch.compile(engine.forward)  # type: ignore[method-assign]
            return GraphedEngine(engine)

        def peer() -> Callable[[torch.Tensor], torch.Tensor]:
            half = eager_from(model, cfg).to(device, torch.float16).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            runner = torch.compile(half, mode="max-autotune")
            return lambda t: runner(t.half().contiguous(memory_format=torch.channels_last))

        variants: dict[str, Callable[[], Callable[[torch.Tensor], torch.Tensor]]] = {
            "engine-fp16-graph": fp16,
            "engine-fp16-graph-packed": packed,
            "engine-fp16-graph-packed-shifted": functools.partial(packed, shifted_phases=True),
            "engine-bf16-graph": bf16,
            "engine-fp16-compile": compiled,
            "eager-fp16-max-autotune": peer,
        }
        chosen = args.variants.split(",") if args.variants else list(variants)
        for name, build in [(n, variants[n]) for n in chosen]:
            row: dict[str, Any] = {"size": size, "variant": name}
            if time.perf_counter() - began > args.deadline:
                row["error"] = "skipped: past --deadline"
                rows.append(row)
                continue
            try:
                t0 = time.perf_counter()
                run = build()
                with torch.inference_mode():
                    out = run(x).float().cpu()
                    row["setup_s"] = round(time.perf_counter() - t0, 1)
                    row["median_ms"] = round(time_cuda(functools.partial(run, x), args.runs), 3)
                row["psnr_db"] = round(psnr(out, ref), 2)
                if name == "engine-fp16-graph":
                    with torch.inference_mode():
                        print(f"\n{size}²: GPU time of the graphed fp16 engine by kernel (10 runs)")
                        print(kernel_table(functools.partial(run, x)))
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = ["| size | variant | median ms | PSNR vs fp32 eager dB | setup s |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['size']}² | {r['variant']} | {r['error']} | | |")
        else:
            lines.append(f"| {r['size']}² | {r['variant']} | {r['median_ms']:.2f} | {r['psnr_db']} | {r['setup_s']} |")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "cuda-variants", "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    args.out.write_text(json.dumps({**result, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
