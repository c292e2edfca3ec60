"""Render the README gallery: each shipped style applied to the bundled public-domain photos.

    python docs/make_gallery.py            # writes docs/gallery.png

Uses the same path as the service: catalog -> verified artifact -> fast engine -> stylize_image.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

from instyle.assets import sample_photos
from model_store.catalog import Catalog, StyleStore
from model_store.shipped import SHIPPED_DIR
from stylenet.fast import load_engine
from stylenet.imageio import load_image, resize_max
from stylenet.inference import stylize_image

CELL = 256
PAD = 6
LABEL = 20
OUT = Path(__file__).resolve().parent / "gallery.png"


def main(out: Path = OUT, n_photos: int = 4) -> None:
    """Rows: held-out photos (the first row holds the paintings); columns: the photo, then each style."""
    catalog = Catalog([StyleStore(SHIPPED_DIR, read_only=True)])
    styles = catalog.styles()
    if not styles:
        sys.exit("no shipped styles in model_store/shipped")
    photos = [load_image(p) for p in sample_photos()[:n_photos]]
    cols = 1 + len(styles)
    rows = 1 + len(photos)
    sheet = Image.new("RGB", (cols * (CELL + PAD) + PAD, rows * (CELL + PAD + LABEL) + PAD), "white")
    draw = ImageDraw.Draw(sheet)

    def put(img: Image.Image, row: int, col: int, label: str) -> None:
        x, y = PAD + col * (CELL + PAD), PAD + row * (CELL + PAD + LABEL)
        small = resize_max(img, CELL)
        sheet.paste(small, (x + (CELL - small.width) // 2, y + LABEL + (CELL - small.height) // 2))
        draw.text((x, y + 4), label, fill="black")

    for row, photo in enumerate(photos, start=1):
        put(photo, row, 0, "photo (not in training)")
    for col, summary in enumerate(styles, start=1):
        resolved = summary.latest
        painting = load_image(resolved.file(resolved.manifest.style_image.file))
        put(painting, 0, col, resolved.manifest.title or summary.id)
        generator = load_engine(resolved.read_artifact(), resolved.manifest.generator)
        for row, photo in enumerate(photos, start=1):
            put(stylize_image(generator, photo, 512), row, col, f"{summary.id}@{resolved.manifest.version}")
    sheet.save(out)
    print(f"wrote {out} ({len(photos)} photos x {len(styles)} styles)")


if __name__ == "__main__":
    main()
