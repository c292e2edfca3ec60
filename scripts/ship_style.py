"""Ship a style trained by scripts/train_shipped_styles.sh into model_store/shipped/.

    .venv/bin/python scripts/ship_style.py great-wave

Copies the published version from runs/store/<id>/<version> (artifact, manifest, history, loss
curve, preview, style thumbnail), records where the training photos came from, and copies the
preview grid and loss curve to docs/ for docs/TRAINING.md. Regenerate the README gallery with
``python docs/make_gallery.py`` afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = ("generator.ts", "history.json", "loss_curve.png", "manifest.json", "preview.jpg", "style.jpg")
PHOTOS = "shared/data/content minus the 6 photos in instyle/assets/photos (147 photos)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("style_id")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--store", type=Path, default=REPO / "runs" / "store")
    args = p.parse_args()
    src = args.store / args.style_id / str(args.version)
    dst = REPO / "model_store" / "shipped" / args.style_id / str(args.version)
    if dst.exists():
        raise SystemExit(f"{dst} exists: shipped styles are read-only; ship a new version instead")
    dst.mkdir(parents=True)
    for name in FILES:
        shutil.copy2(src / name, dst / name)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["training"]["photos_dir"] = PHOTOS
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    stem = args.style_id.replace("-", "_")
    shutil.copy2(src / "preview_grid.png", REPO / "docs" / f"{stem}_preview_grid.png")
    shutil.copy2(src / "loss_curve.png", REPO / "docs" / f"{stem}_loss_curve.png")
    size = (dst / "generator.ts").stat().st_size
    print(f"shipped {args.style_id}@{args.version} ({size / 1e6:.1f} MB) to {dst.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
