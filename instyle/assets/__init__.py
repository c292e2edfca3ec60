"""Small public-domain / CC0 images shipped with instyle (see README.md in this folder)."""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
SAMPLE_PHOTOS_DIR = ASSETS_DIR / "photos"
SAMPLE_STYLES_DIR = ASSETS_DIR / "styles"


def sample_photos() -> list[Path]:
    return sorted(SAMPLE_PHOTOS_DIR.glob("*.jpg"))
