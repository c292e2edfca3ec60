"""How sensitive a trained generator is to tiny input changes, by image size.

    python benchmarks/sensitivity.py --sizes 512,1024,2048

For each size: the float32 engine's output on the benchmark photo against its output on the
same photo plus uniform noise of +-``--noise`` grey levels (default 0.25, a quarter of 8-bit
quantization), and the bf16 engine against float32, both as PSNR. When the two columns move
together, a lower bf16 PSNR is the network's own sensitivity, not the engine's error. The
next column is the bf16 engine tiled (``stylenet.tiling``) against the same engine untiled,
and the last the tiled bf16 engine (the worker's path above 4.2 MP) against float32.
``--float64`` adds the eager float32 model against a float64 run (slow: ~40 s at 1024²).
``--image mosaic`` uses native-resolution crops instead of one enlarged photo, ``--image flat`` a
uniform grey (no detail: the network then normalizes rounding, whatever computes it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.inference import SHIPPED, add_image_option, bench_image  # noqa: E402
from benchmarks.options import positive_ints, write_results  # noqa: E402
from stylenet.config import GeneratorConfig  # noqa: E402
from stylenet.export import load_generator, psnr  # noqa: E402
from stylenet.fast import JohnsonEngine, cpu_has_native_bf16, eager_from, optimize  # noqa: E402
from stylenet.tiling import tiled_forward  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=positive_ints, default=[512, 1024, 2048])
    p.add_argument("--noise", type=float, default=0.25, help="half-width of the input noise, in grey levels")
    p.add_argument("--float64", action="store_true", help="also compare eager float32 with float64")
    add_image_option(p)
    p.add_argument("--out", type=Path, help="also write the rows as JSON there")
    args = p.parse_args(argv)
    rows: list[dict[str, Any]] = []
    cfg = GeneratorConfig.from_dict(json.loads((SHIPPED / "manifest.json").read_text())["generator"])
    model = load_generator(SHIPPED / "generator.ts")
    fp32 = optimize(model, cfg, precision="fp32")
    bf16 = optimize(model, cfg, precision="bf16") if cpu_has_native_bf16() else None
    g = torch.Generator().manual_seed(0)
    eager = eager_from(model, cfg) if args.float64 else None
    extra = " eager fp32 vs float64, dB |" if eager is not None else ""
    print(
        "| size | fp32: photo vs photo + noise, dB | bf16 vs fp32, dB | bf16 tiled vs untiled, dB "
        f"| bf16 tiled vs fp32, dB |{extra}"
    )
    print("|---|---|---|---|---|" + ("---|" if eager is not None else ""))
    for size in args.sizes:
        x = bench_image(args.image, size)
        noisy = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * args.noise / 255).clamp(0, 1)
        ref = fp32(x)
        moved = psnr(fp32(noisy), ref)
        del noisy
        engine = bf16 if bf16 is not None else fp32
        assert isinstance(engine, JohnsonEngine)  # the shipped styles are Johnson generators
        untiled = engine(x)
        low = f"{psnr(untiled, ref):.1f}" if bf16 is not None else "(no bf16 here)"
        tiled_out = tiled_forward(engine, x)
        tiled = psnr(tiled_out, untiled)
        del untiled
        record: dict[str, Any] = {
            "size": size, "fp32_vs_noisy_db": round(moved, 2), "tiled_vs_untiled_db": round(tiled, 2),
            "tiled_vs_fp32_db": round(psnr(tiled_out, ref), 2),
            "bf16_vs_fp32_db": round(psnr(engine(x), ref), 2) if bf16 is not None else None,
        }  # fmt: skip
        row = f"| {size}² | {moved:.1f} | {low} | {tiled:.1f} | {record['tiled_vs_fp32_db']:.1f} |"
        if eager is not None:
            with torch.inference_mode():
                exact = eager.double()(x.double()).float()
                record["eager_fp32_vs_float64_db"] = round(psnr(eager.float()(x), exact), 2)
                row += f" {record['eager_fp32_vs_float64_db']:.1f} |"
        rows.append(record)
        print(row, flush=True)
    if args.out:
        write_results(args.out, "sensitivity", argv, rows, image=args.image, noise_grey_levels=args.noise)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
