"""One residual-block convolution (3x3, 128 -> 128 channels, float32) seven ways, by map size:
oneDNN's direct convolution as the engine runs it (fused into a zeroed output buffer),
``stylenet.winograd``'s F(2x2, 3x3) and F(4x4, 3x3) over bands of tiles with their transforms as
torch's sums, and, where the native kernels build (``stylenet.native``), F(2x2, 3x3), F(4x4, 3x3),
F(6x6, 3x3) and F(8x8, 3x3) as the engine runs them: the whole convolution in C, its kernel packed
once (``winograd.fused_kernel``), ``Algorithm.group_tiles`` tiles per group.

    python benchmarks/winograd.py                          # maps 32² .. 256²
    python benchmarks/winograd.py --sizes 64,128 --rounds 3 --out benchmarks/results/winograd.json

Prints the best time of ``--runs`` calls after warm-up, the best over ``--rounds`` rounds that
alternate the ways (this is what ``winograd.choose`` was set from; "chosen" is its pick, with the
fused native convolution where the native kernels build), and the largest difference from the
direct output. Writes JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.inference import machine  # noqa: E402
from benchmarks.options import positive_int, positive_ints  # noqa: E402
from stylenet import native, winograd  # noqa: E402
from stylenet.config import tune_malloc  # noqa: E402
from stylenet.fast import conv2d  # noqa: E402

CL = torch.channels_last
NATIVE_ALGORITHMS = {"F2": winograd.F2, "F4": winograd.F4, "F6": winograd.F6, "F8": winograd.F8}


def best_ms(fn: Callable[[], object], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times) * 1000


def measure(side: int, channels: int, runs: int, rounds: int) -> dict[str, Any]:
    """Best times of the ways on one (channels, side, side) output, alternated by round."""
    torch.manual_seed(0)
    x = torch.randn(1, channels, side + 2, side + 2).contiguous(memory_format=CL)
    weight = (torch.randn(channels, channels, 3, 3) / (3 * channels**0.5)).contiguous(memory_format=CL)
    out = torch.empty(1, channels, side, side).contiguous(memory_format=CL)
    algs = {"F2": winograd.F2, "F4": winograd.F4}
    kernels = {name: winograd.transformed_kernel(weight, alg) for name, alg in algs.items()}
    ways: dict[str, Callable[[], torch.Tensor]] = {"direct": lambda: conv2d(x, weight, None, 1)}
    for name, alg in algs.items():
        ways[name] = functools.partial(winograd.conv3x3, x, kernels[name], out, alg, use_native=False)
    if native.library() is not None:  # the whole convolution in C, its kernel packed once, as the engine runs it
        for name, alg in NATIVE_ALGORITHMS.items():
            packed = winograd.fused_kernel(weight, alg)
            ways[f"{name} native"] = functools.partial(winograd.conv2d, x, weight, packed, alg, out, use_native=True)
    best: dict[str, float] = {}
    with torch.inference_mode():
        ref = conv2d(x, weight, None, 1).clone()
        diffs = {name: float((fn() - ref).abs().max()) for name, fn in ways.items() if name != "direct"}
        for _ in range(rounds):
            for name, fn in ways.items():
                best[name] = min(best.get(name, float("inf")), best_ms(fn, runs))
    picked = winograd.choose(side * side, fused=native.library() is not None, channels=channels)
    chosen = "direct" if picked is None else f"F{picked.m}"
    return {"side": side, "channels": channels, "best_ms": best, "chosen": chosen, "max_diff": diffs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=positive_ints, default=[8, 16, 32, 64, 80, 96, 128, 256], help="output map sides")
    p.add_argument("--channels", type=positive_int, default=128, help="in and out: a multiple of 32, as the nets' maps")
    p.add_argument("--runs", type=positive_int, default=11)
    p.add_argument("--rounds", type=positive_int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.channels % 32:  # the packed kernels' blocks (measured: 32, 64, 96, 128 run; 16, 48 fail)
        p.error(f"--channels {args.channels}: a multiple of 32")
    tune_malloc()  # as the CLI runs the engine
    rows = []
    kernels = native.library()
    print(f"native transforms: {kernels.path if kernels else 'unavailable (INSTYLE_NATIVE, or no C compiler)'}")
    names = ["F2", "F4"] + ([f"{name} native" for name in NATIVE_ALGORITHMS] if kernels else [])
    print(f"| map | direct ms | {' | '.join(f'{n} ms' for n in names)} | chosen | max diff, {' / '.join(names)} |")
    print("|---" * (len(names) + 4) + "|")
    for side in args.sizes:
        row = measure(side, args.channels, args.runs, args.rounds)
        best, diffs = row["best_ms"], row["max_diff"]
        times = " | ".join(f"{best[n]:.2f}" for n in names)
        worst = " / ".join(f"{diffs[n]:.1e}" for n in names)
        print(f"| {side}² | {best['direct']:.2f} | {times} | {row['chosen']} | {worst} |")
        rows.append(row)
    if args.out:
        env = {k: os.environ[k] for k in ("INSTYLE_NATIVE", "INSTYLE_NATIVE_CFLAGS") if k in os.environ}
        result = {"machine": machine(), "threads": torch.get_num_threads(), "native": env, "rows": rows}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
