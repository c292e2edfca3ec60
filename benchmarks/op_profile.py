"""Where a generator's time goes, by PyTorch op: the eager float32 model or the worker's engine.

    python benchmarks/op_profile.py --sizes 512,1024              # eager float32
    python benchmarks/op_profile.py --sizes 1024 --path worker    # the fast engine
    python benchmarks/op_profile.py --sizes 512 --path worker --style starry-night-ulyanov

Runs a shipped style's generator (``--style``, starry-night by default) once to warm up, once
under ``torch.profiler``, and prints each op's share of self CPU time (ops under 1 % are left out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.profiler import profile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.inference import SHIPPED, photo  # noqa: E402
from benchmarks.options import positive_ints, shipped_style, write_results  # noqa: E402
from stylenet.config import GeneratorConfig  # noqa: E402
from stylenet.export import load_generator  # noqa: E402
from stylenet.fast import eager_from, optimize  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=positive_ints, default=[512, 1024])
    p.add_argument("--path", choices=("eager", "worker"), default="eager")
    p.add_argument(
        "--style", type=shipped_style, default=SHIPPED.parent.name, help="a shipped style (model_store/shipped/<style>)"
    )
    p.add_argument("--out", type=Path, help="also write the rows as JSON there")
    args = p.parse_args(argv)
    rows: list[dict[str, Any]] = []
    folder = SHIPPED.parents[1] / args.style / SHIPPED.name
    cfg = GeneratorConfig.from_dict(json.loads((folder / "manifest.json").read_text())["generator"])
    model = load_generator(folder / "generator.ts")
    run = eager_from(model, cfg) if args.path == "eager" else optimize(model, cfg)
    print("| size | op | share of self CPU time |\n|---|---|---|")
    for size in args.sizes:
        x = photo(size)
        with torch.inference_mode():
            run(x)
            with profile() as prof:
                run(x)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total):
            share = e.self_cpu_time_total / total
            if share >= 0.01:
                rows.append({"size": size, "op": e.key, "share": round(share, 4)})
                print(f"| {size}² | {e.key} | {share:.0%} |")
    if args.out:
        write_results(args.out, "op_profile", argv, rows, style=args.style, path=args.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
