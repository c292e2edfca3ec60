"""Large photos through the worker's own stylize path: time and peak memory, JPEG to JPEG.

    python benchmarks/large.py                                  # 4096² and 8192², both shipped generators
    python benchmarks/large.py --styles starry-night --sizes 8192 --out benchmarks/results/large.json

Where ``inference.py`` times the generator on a float tensor, this runs what a stylize job runs
on an upload: decode the JPEG to its pixels (``stylenet.imageio.load_pixels``), stylize them
(``stylenet.inference.stylize_pixels``, tiled above the worker's threshold, the photo and the
picture passed as bytes) and encode the result (``encode_pixels``), each (style, size) in a fresh process set up as
the CLI sets itself up (malloc tuning, huge pages), so that its peak RSS is its own. The photo is
``inference.mosaic`` (native-resolution crops of the bundled photos) saved as a JPEG. Prints a
table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.memory import peak_rss_mb  # noqa: E402
from benchmarks.options import positive_ints, shipped_style  # noqa: E402
from stylenet.config import tune_malloc, use_huge_pages  # noqa: E402

DEFAULT_STYLES = ("starry-night", "starry-night-ulyanov")
DEFAULT_SIZES = (4096, 8192)


def measure(style: str, jpeg: Path, tile_megapixels: float | None, precision: str) -> dict[str, Any]:
    """One stylize job's work on ``jpeg``, in this process."""
    import torch

    from model_store.shipped import open_catalog
    from stylenet.fast import load_engine
    from stylenet.imageio import encode_pixels, load_pixels
    from stylenet.inference import stylize_pixels, tiled_engine
    from stylenet.tiling import tile_threshold

    resolved = open_catalog(None).resolve(style)
    device = torch.device("cpu")
    manifest = resolved.manifest
    engine = load_engine(resolved.read_artifact(), manifest.generator, device, precision, manifest.ref)
    tile_pixels = tile_threshold(tile_megapixels, device)
    loaded_mb = peak_rss_mb()
    start = time.perf_counter()
    photo = load_pixels(jpeg.read_bytes())
    height, width = photo.shape[:2]
    decoded = time.perf_counter()
    timings: dict[str, float] = {}
    out = stylize_pixels(engine, photo[None], [False], device, tile_pixels, timings)[0]
    stylized = time.perf_counter()
    data = encode_pixels(out, "jpeg", 90)
    encoded = time.perf_counter()
    return {
        "style": resolved.manifest.ref,
        "size": width,
        "precision": getattr(engine, "precision", "TorchScript module"),  # no fast engine: said so
        "tiled": tiled_engine(engine, width * height, tile_pixels) is not None,
        "decode_s": round(decoded - start, 3),
        "stylize_s": round(stylized - decoded, 3),
        "model_s": round(timings["model_s"], 3),
        "encode_s": round(encoded - stylized, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "loaded_rss_mb": round(loaded_mb, 1),
        "output_bytes": len(data),
        "output_sha1": hashlib.sha1(out.numpy().tobytes()).hexdigest()[:12],  # as PIL's RGB tobytes()
    }


def write_photo(size: int, path: Path) -> None:
    from benchmarks.inference import mosaic
    from stylenet.imageio import encode_image, tensor_to_image

    path.write_bytes(encode_image(tensor_to_image(mosaic(size)[0]), "jpeg", 90))


def _child(*args: str) -> subprocess.CompletedProcess[str]:
    """``large.py --child ...`` in a fresh process. (The photo is made in one too: Linux carries a
    process's peak RSS over into the program it execs, so a parent that had built an 8192²
    image would lend every child its peak.)"""
    return subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from benchmarks.inference import machine

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            jpeg = Path(tmp) / f"mosaic-{size}.jpg"
            made = _child("--make-photo", str(size), "--photo", str(jpeg))
            if made.returncode != 0:
                raise RuntimeError(f"could not make the {size}² photo: {made.stderr[-500:]}")
            for style in args.styles:
                extra = [] if args.tile_megapixels is None else ["--tile-megapixels", str(args.tile_megapixels)]
                proc = _child("--styles", style, "--photo", str(jpeg), "--precision", args.precision, *extra)
                if proc.returncode != 0:
                    last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                    rows.append({"style": style, "size": size, "error": f"exit {proc.returncode}: {last[0][:200]}"})
                else:
                    rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(_row(rows[-1]), flush=True)
    return {
        "benchmark": "large",
        "command": " ".join(["python", "benchmarks/large.py", *argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "rows": rows,
    }


HEADER = (
    "| style | size | precision | tiled | decode s | stylize s (model s) | encode s | peak RSS MB (after loading) |\n"
    "|---|---|---|---|---|---|---|---|"
)


def _row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {r['style']} | {r['size']}² | {r['error']} | | | | | |"
    return (
        f"| {r['style']} | {r['size']}² | {r['precision']} | {'yes' if r['tiled'] else 'no'} | {r['decode_s']:.2f} | "
        f"{r['stylize_s']:.1f} ({r['model_s']:.1f}) | {r['encode_s']:.2f} | {r['peak_rss_mb']:.0f} "
        f"({r['loaded_rss_mb']:.0f}) |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--styles", type=lambda s: [shipped_style(v) for v in s.split(",")], default=list(DEFAULT_STYLES))
    p.add_argument("--sizes", type=positive_ints, default=list(DEFAULT_SIZES))
    p.add_argument("--tile-megapixels", type=float, default=None, help="default: the worker's (per device)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="the worker's (on the CPU)")
    p.add_argument("--out", type=Path)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--photo", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--make-photo", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child and args.make_photo:
        write_photo(args.make_photo, args.photo)
        return 0
    if args.child:
        use_huge_pages()
        tune_malloc()
        print(json.dumps(measure(args.styles[0], args.photo, args.tile_megapixels, args.precision)))
        return 0
    print(HEADER, flush=True)
    result = run(args, argv if argv is not None else sys.argv[1:])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0 if all("error" not in r for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
