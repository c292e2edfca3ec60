"""The Johnson engine's CPU options, on and off, side by side in one process.

    python benchmarks/cpu_variants.py                              # 256², 512², 1024²
    python benchmarks/cpu_variants.py --sizes 512,2048 --rounds 8 --out benchmarks/results/cpu-variants.json
    python benchmarks/cpu_variants.py --precision fp32             # as on a CPU without bf16
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
      INSTYLE_NATIVE_CFLAGS="-O3 -march=znver3" python benchmarks/cpu_variants.py --precision fp32
                                                                   # ... and without AVX-512

This VM's speed drifts by 10-40 % within minutes, so two benchmark runs minutes apart cannot
tell a 10 % change. Here every variant of the shipped starry-night generator is built once, and
each round times one pass of each, in an order that alternates from round to round; the table
gives the best and the median per variant, and the PSNR of its output against the float32 eager
model's on the benchmark's photo. The variants (``stylenet.fast.JohnsonEngine``'s options):

* ``default``: the engine as the worker builds it on this machine;
* ``no-shifted-phases``: the upsampling convolutions as four 3x3 phase kernels, not one 2x2
  convolution of the phases' taps (``shifted_phases=False``);
* ``winograd`` / ``no-winograd``: the residual blocks with or without Winograd's algorithms,
  whichever the default is not (``winograd_residuals``; they run in float32 only);
* ``winograd-sums``: Winograd's transforms as torch's sums instead of in C (when the default
  runs Winograd with the native kernels, ``stylenet.native``);
* ``winograd-bands``: the transforms in C but the products by torch's ``bmm`` over bands of
  tiles, instead of the whole convolution in C (``fused_winograd=False``);
* ``direct-upsampling``: the upsampling's 2x2 convolutions by oneDNN instead of Winograd's
  F(3x3, 2x2) in C (``winograd_upsampling=False``);
* ``direct-ends``: the two 9x9 convolutions at the RGB ends (the output one packed as a 5x5 on
  the space-to-depth map) by oneDNN instead of Winograd's F(4x4, 5x5) in C on space-to-depth
  maps (``winograd_ends=False``);
* ``bf16-residuals`` / ``float32-residuals``: a bf16 engine's residual blocks in bf16 (oneDNN's
  direct convolutions) or in float32 (Winograd's, in C), whichever the default is not
  (``residual_dtype``; ``stylenet.fast.float32_residuals`` picks);
* ``packed-rgb-3`` / ``packed-rgb-4``: the packed output convolution with 12 outputs (RGB per
  phase) or 16 (a zero channel each), whichever the default is not (``packed_rgb``);
* ``no-f8`` / ``no-f6r5``: the default engine with Winograd's F(6x6, 3x3) where it runs F(8x8,
  3x3) (``winograd.F8_PRODUCTS_SHARE`` set to 0), or F(4x4, 5x5) where it runs F(6x6, 5x5) at the
  RGB ends (``winograd.F6R5`` never chosen), for the pass only (``winograd.choose``'s picks, not
  engine options); where the default runs them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stylenet.config import tune_malloc, use_huge_pages  # noqa: E402

use_huge_pages()  # as the CLI does, before torch's first allocation

import torch  # noqa: E402

from benchmarks.inference import SHIPPED, bench_image, machine  # noqa: E402
from stylenet import native, winograd  # noqa: E402
from stylenet.config import GeneratorConfig  # noqa: E402
from stylenet.export import load_generator_bytes  # noqa: E402
from stylenet.fast import JohnsonEngine, eager_from, optimize  # noqa: E402


def variants(folder: Path, precision: str) -> tuple[dict[str, JohnsonEngine], torch.nn.Module]:
    """The engines to compare, by name, and the float32 eager reference."""
    cfg = GeneratorConfig.from_dict(json.loads((folder / "manifest.json").read_text())["generator"])
    model = load_generator_bytes((folder / "generator.ts").read_bytes())
    default = optimize(model, cfg, "cpu", precision)
    assert isinstance(default, JohnsonEngine), "the shipped starry-night style is a Johnson net"
    eager = eager_from(model, cfg).eval()
    cpu = torch.device("cpu")

    def build(**options: bool | int | torch.dtype) -> JohnsonEngine:
        return JohnsonEngine(eager.body, cfg.padding, default.dtype, cpu, **options)  # type: ignore[arg-type]

    engines = {"default": default, "no-shifted-phases": build(shifted_phases=False)}
    if default.dtype == torch.float32:
        flip = not default.winograd_residuals
        engines["winograd" if flip else "no-winograd"] = build(winograd_residuals=flip)
        if default.winograd_residuals and native.library() is not None:
            engines["winograd-sums"] = build(native_transforms=False)
            engines["winograd-bands"] = build(fused_winograd=False)
        if default.winograd_upsampling:
            engines["direct-upsampling"] = build(winograd_upsampling=False)
        if default.winograd_ends:
            engines["direct-ends"] = build(winograd_ends=False)
    elif default.dtype == torch.bfloat16:  # residual blocks in float32 or in bf16, whichever is not the default
        other_dtype = torch.bfloat16 if default.res_dtype == torch.float32 else torch.float32
        name = "bf16-residuals" if other_dtype == torch.bfloat16 else "float32-residuals"
        engines[name] = build(residual_dtype=other_dtype)
    other = 7 - default.packed_rgb  # 3 <-> 4
    engines[f"packed-rgb-{other}"] = build(packed_rgb=other)
    return engines, eager


def choice_variants(default: JohnsonEngine) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The default engine with one of ``winograd``'s choices undone for each pass (``no-f8``,
    ``no-f6r5``), where the default makes it: each Conv keeps both algorithms' kernels."""
    variants: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    fused = native.library() is not None  # (both run float32: the residual blocks' dtype, the ends')
    if fused and default.winograd_residuals:
        variants["no-f8"] = _with_winograd(default, F8_PRODUCTS_SHARE=0.0)
    if fused and default.winograd_ends:
        variants["no-f6r5"] = _with_winograd(
            default, F6R5=dataclasses.replace(winograd.F6R5, min_pixels_native=sys.maxsize)
        )
    return variants


def _with_winograd(engine: JohnsonEngine, **values: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        saved = {name: getattr(winograd, name) for name in values}
        for name, value in values.items():
            setattr(winograd, name, value)
        try:
            return engine(x)
        finally:
            for name, value in saved.items():
                setattr(winograd, name, value)

    return run


def psnr(out: torch.Tensor, ref: torch.Tensor) -> float:
    mse = (out.float().clamp(0, 1) - ref.clamp(0, 1)).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def measure(
    engines: dict[str, Callable[[torch.Tensor], torch.Tensor]], ref_model: Any, size: int, rounds: int
) -> dict[str, Any]:
    x = bench_image("enlarged", size)
    with torch.inference_mode():
        ref = ref_model(x)
        quality = {name: psnr(engine(x), ref) for name, engine in engines.items()}  # also the warm-up
        del ref
        times: dict[str, list[float]] = {name: [] for name in engines}
        names = list(engines)
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                began = time.perf_counter()
                engines[name](x)
                times[name].append((time.perf_counter() - began) * 1000)
    return {
        name: {"best_ms": min(t), "median_ms": statistics.median(t), "runs_ms": t, "psnr_db": quality[name]}
        for name, t in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="256,512,1024")
    p.add_argument("--rounds", type=int, default=6, help="timed passes of each variant, alternated")
    p.add_argument("--precision", default="auto", help="auto (as the worker), fp32, bf16")
    p.add_argument("--style", type=Path, default=SHIPPED, help="a published Johnson style's version folder")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    tune_malloc()
    engines, eager = variants(args.style, args.precision)
    dtype = str(engines["default"].dtype).removeprefix("torch.")
    runs: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {**engines, **choice_variants(engines["default"])}
    isa = machine()
    caps = " ".join(f"{k}={v}" for k, v in isa["isa_caps"].items()) or "no caps"
    where = f"{isa['cpu_capability']} ({caps})"
    print(f"engine in {dtype} (--precision {args.precision}) on {where}; variants: {', '.join(runs)}")
    print("| size | variant | best ms | median ms | vs default (median) | PSNR vs eager dB |")
    print("|---|---|---|---|---|---|")
    results: dict[str, Any] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        row = measure(runs, eager, size, args.rounds)
        results[str(size)] = row
        base = row["default"]["median_ms"]
        for name, r in row.items():
            change = "" if name == "default" else f"{r['median_ms'] / base - 1:+.0%}"
            print(
                f"| {size}² | {name} | {r['best_ms']:.0f} | {r['median_ms']:.0f} | {change} | {r['psnr_db']:.1f} |",
                flush=True,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": machine(), "dtype": dtype, "rounds": args.rounds, "results": results}
        args.out.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
