"""Every style shipped in the repository is complete, verified, small and attributed."""

from __future__ import annotations

import pytest

from model_store.catalog import StyleStore
from model_store.shipped import SHIPPED_DIR

SHIPPED = StyleStore(SHIPPED_DIR, read_only=True)
MAX_ARTIFACT_BYTES = 8 * 1024 * 1024


def test_there_are_shipped_styles() -> None:
    assert "starry-night" in SHIPPED.style_ids()


@pytest.mark.parametrize("style_id", SHIPPED.style_ids())
def test_shipped_style_is_complete(style_id: str) -> None:
    for version in SHIPPED.versions(style_id):
        resolved = SHIPPED.get(style_id, version)
        m = resolved.manifest
        data = resolved.read_artifact()  # verifies the sha256
        assert len(data) <= MAX_ARTIFACT_BYTES
        assert m.artifact.format == "torchscript" and m.generator["arch"] in ("johnson", "ulyanov")
        assert m.recipe["iterations"] == m.training["iterations"] and m.training["wall_time_s"] > 0
        assert {"total", "content", "style"} <= set(m.final_losses)
        assert m.style_image.source and m.style_image.license
        # measured on held-out photos: much closer to the painting than the photos, content kept
        assert m.metrics["holdout_photos"] >= 4 and m.metrics["relative_style_distance"] < 0.5
        assert 0 < m.metrics["content_distance"] < 1.5
        for name in (m.preview, m.style_image.file, "loss_curve.png", "history.json"):
            assert resolved.file(name).is_file(), name
