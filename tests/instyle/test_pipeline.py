"""``instyle.pipeline.train_and_publish``: a stop request is honoured up to the publish."""

from __future__ import annotations

from pathlib import Path

import pytest

from instyle.pipeline import StyleSource, train_and_publish
from model_store.catalog import Catalog, StyleStore
from stylenet.config import GeneratorConfig
from stylenet.exceptions import TrainingStopped
from stylenet.recipe import TrainRecipe
from tests.conftest import ASSET_STYLE

ITERATIONS = 2


@pytest.mark.slow
@pytest.mark.parametrize("stop_at_call", [ITERATIONS + 1, ITERATIONS + 2])  # after training; before publishing
def test_a_stop_asked_after_the_last_iteration_publishes_nothing(
    small_photos: Path, tmp_path: Path, stop_at_call: int
) -> None:
    """A training job canceled while it exported its last weights was published all the same
    (``should_stop`` was only asked before each iteration)."""
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls >= stop_at_call

    catalog = Catalog([StyleStore(tmp_path / "store")])
    with pytest.raises(TrainingStopped, match="nothing was published"):
        train_and_publish(
            photos=small_photos, style=StyleSource(ASSET_STYLE, "t", "test", "test"), name="late", catalog=catalog,
            config=GeneratorConfig(width=0.25, residual_blocks=1),
            recipe=TrainRecipe(iterations=ITERATIONS, batch_size=1, image_size=32, style_size=48, precision="fp32"),
            preview_photos=[], device="cpu", report_dir=tmp_path / "report", should_stop=should_stop,
        )  # fmt: skip
    assert calls == stop_at_call and catalog.versions("late") == []
