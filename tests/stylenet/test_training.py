from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from stylenet.config import GeneratorConfig
from stylenet.data import PhotoDataset
from stylenet.exceptions import CheckpointError, EmptyDataset, TrainingDiverged
from stylenet.fast import cpu_has_native_bf16
from stylenet.recipe import TrainRecipe
from stylenet.training import TrainProgress, train, training_dtype

SMALL = GeneratorConfig(width=0.25, residual_blocks=2)


def _recipe(**kw: object) -> TrainRecipe:
    base = dict(
        iterations=8,
        batch_size=2,
        image_size=32,
        style_size=48,
        lr=1e-2,
        precision="fp32",
        log_every=2,
        checkpoint_every=3,
    )
    base.update(kw)
    return TrainRecipe(**base)  # type: ignore[arg-type]


def test_a_few_steps_lower_the_loss(
    small_photos: Path, style_image: Image.Image, tiny_extractor: torch.nn.Module
) -> None:
    seen: list[TrainProgress] = []
    recipe = _recipe(iterations=40, log_every=5, crop_scale=(1.0, 1.0), style_weight=1e3)
    result = train(
        small_photos, style_image, SMALL, recipe, extractor=tiny_extractor, callback=lambda p, m: seen.append(p)
    )
    first, last = result.history[0]["total"], result.history[-1]["total"]
    assert last < 0.7 * first, (first, last)
    assert [p.iteration for p in seen] == list(range(5, 41, 5))
    assert seen[-1].total == 40 and seen[-1].eta_s == 0.0 and seen[0].it_per_s > 0
    # the speed is over the last RATE_WINDOW_S (30 s): here, every iteration since the start
    for p in seen:
        assert p.it_per_s == pytest.approx(p.iteration / p.elapsed_s, rel=1e-6)
    assert not result.generator.training
    assert set(result.final_losses) == {"total", "content", "style", "tv"}


def test_speed_is_measured_over_recent_seconds_not_one_report(
    small_photos: Path, style_image: Image.Image, tiny_extractor: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slow report (a preview made in the callback) must not swing the ETA: the speed is over
    the last ``RATE_WINDOW_S``; with a window shorter than a report, it is the last report's."""
    import stylenet.training as training

    def run(window_s: float) -> list[TrainProgress]:
        monkeypatch.setattr(training, "RATE_WINDOW_S", window_s)
        seen: list[TrainProgress] = []

        def slow_at_5(p: TrainProgress, m: torch.nn.Module) -> None:
            seen.append(p)
            if p.iteration == 5:
                time.sleep(1.0)

        train(small_photos, style_image, SMALL, _recipe(iterations=8, log_every=1), extractor=tiny_extractor,
              callback=slow_at_5)  # fmt: skip
        return seen

    windowed, per_report = run(30.0), run(0.0)
    # after the slow one: over the window, 6 iterations in ~1 s + 6 quick ones; per report, ~1 it/s
    assert per_report[5].it_per_s < 1.2
    assert windowed[5].it_per_s == pytest.approx(6 / windowed[5].elapsed_s, rel=1e-6)
    assert windowed[5].it_per_s > 3 * per_report[5].it_per_s


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(
    tmp_path: Path, small_photos: Path, style_image: Image.Image, tiny_extractor: torch.nn.Module
) -> None:
    """Ctrl-C between checkpoints lost every iteration since the last one (or all of them, before
    the first): it now saves the completed iterations, and --resume goes on as if never stopped."""
    recipe = _recipe(checkpoint_every=100)  # no checkpoint of its own before the end
    straight = train(small_photos, style_image, SMALL, recipe, extractor=tiny_extractor)
    ckpt = tmp_path / "ckpt.pt"

    def ctrl_c_at_4(progress: TrainProgress, model: torch.nn.Module) -> None:
        if progress.iteration == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            small_photos, style_image, SMALL, recipe, extractor=tiny_extractor, checkpoint_path=ckpt,
            callback=ctrl_c_at_4,
        )  # fmt: skip
    assert torch.load(ckpt, weights_only=True)["iteration"] == 4
    resumed = train(
        small_photos, style_image, SMALL, recipe, extractor=tiny_extractor, checkpoint_path=ckpt, resume=True
    )
    assert resumed.resumed_from == 4
    for a, b in zip(straight.generator.state_dict().values(), resumed.generator.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_resume_continues_exactly(
    tmp_path: Path, small_photos: Path, style_image: Image.Image, tiny_extractor: torch.nn.Module
) -> None:
    straight = train(small_photos, style_image, SMALL, _recipe(), extractor=tiny_extractor)
    ckpt = tmp_path / "ckpt.pt"

    class Crash(Exception):
        pass

    def crash_at_7(progress: TrainProgress, model: torch.nn.Module) -> None:
        if progress.iteration >= 7:
            raise Crash

    with pytest.raises(Crash):
        train(
            small_photos,
            style_image,
            SMALL,
            _recipe(),
            extractor=tiny_extractor,
            checkpoint_path=ckpt,
            callback=crash_at_7,
        )
    assert torch.load(ckpt, weights_only=True)["iteration"] == 6  # last checkpoint before the crash
    resumed = train(
        small_photos, style_image, SMALL, _recipe(), extractor=tiny_extractor, checkpoint_path=ckpt, resume=True
    )
    assert resumed.resumed_from == 6
    assert [h["iteration"] for h in resumed.history] == [2, 4, 6, 8]
    for a, b in zip(straight.generator.state_dict().values(), resumed.generator.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_resume_refuses_another_recipe(
    tmp_path: Path, small_photos: Path, style_image: Image.Image, tiny_extractor: torch.nn.Module
) -> None:
    ckpt = tmp_path / "ckpt.pt"
    train(small_photos, style_image, SMALL, _recipe(iterations=3), extractor=tiny_extractor, checkpoint_path=ckpt)
    with pytest.raises(CheckpointError, match="lr"):
        train(
            small_photos,
            style_image,
            SMALL,
            _recipe(lr=5e-3),
            extractor=tiny_extractor,
            checkpoint_path=ckpt,
            resume=True,
        )
    with pytest.raises(CheckpointError, match="generator config"):
        train(
            small_photos,
            style_image,
            GeneratorConfig(width=0.5),
            _recipe(),
            extractor=tiny_extractor,
            checkpoint_path=ckpt,
            resume=True,
        )
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(
            small_photos,
            style_image,
            SMALL,
            _recipe(),
            extractor=tiny_extractor,
            checkpoint_path=tmp_path / "none.pt",
            resume=True,
        )


def test_bf16_training_runs(small_photos: Path, style_image: Image.Image, tiny_extractor: torch.nn.Module) -> None:
    result = train(small_photos, style_image, SMALL, _recipe(iterations=2, precision="bf16"), extractor=tiny_extractor)
    assert all(p.dtype == torch.float32 for p in result.generator.parameters())
    assert torch.isfinite(torch.tensor(result.final_losses["total"]))


def test_auto_precision_trains_in_bf16_only_where_the_cpu_computes_it() -> None:
    """Emulated bf16 convolutions on an AVX2-only CPU ran 175x slower than float32."""
    cpu = torch.device("cpu")
    assert TrainRecipe().precision == "auto"
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert training_dtype("auto", cpu) == expected
    assert training_dtype("fp32", cpu) == torch.float32 and training_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        TrainRecipe(precision="fp16")  # type: ignore[arg-type]


def test_dataset_errors_and_skips(tmp_path: Path, small_photos: Path, caplog: pytest.LogCaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmptyDataset, match="no jpg/png/webp"):
        PhotoDataset(empty, 32)
    with pytest.raises(EmptyDataset, match="does not exist"):
        PhotoDataset(tmp_path / "missing", 32)
    mixed = tmp_path / "mixed" / "nested"
    mixed.mkdir(parents=True)
    (mixed / "broken.jpg").write_bytes(b"not a jpeg")
    Image.open(next(small_photos.glob("*.jpg"))).save(mixed / "ok.png")
    ds = PhotoDataset(tmp_path / "mixed", 24)
    assert len(ds) == 2
    with caplog.at_level(logging.WARNING):
        batch = ds.sample(6, torch.Generator().manual_seed(1))
    assert batch.shape == (6, 3, 24, 24)
    assert "broken.jpg" in caplog.text
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.webp").write_bytes(b"junk")
    with pytest.raises(EmptyDataset, match="could be decoded"), caplog.at_level(logging.ERROR):
        PhotoDataset(only_bad, 24).sample(1, torch.Generator())


def test_recipe_validation_and_round_trip() -> None:
    r = TrainRecipe(iterations=5, style_weight=2.5)
    assert TrainRecipe.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError, match="batch_size"):
        TrainRecipe(batch_size=0)
    with pytest.raises(ValueError, match="unknown recipe keys"):
        TrainRecipe.from_dict({"epochs": 2})


def test_should_stop_interrupts_and_keeps_the_checkpoint(
    tmp_path: Path, small_photos: Path, style_image: Image.Image, tiny_extractor: torch.nn.Module
) -> None:
    from stylenet.exceptions import TrainingStopped

    calls = iter(range(100))
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(TrainingStopped, match="iteration 4"):
        train(small_photos, style_image, SMALL, _recipe(), extractor=tiny_extractor, checkpoint_path=ckpt,
              should_stop=lambda: next(calls) >= 4)  # fmt: skip
    assert torch.load(ckpt, weights_only=True)["iteration"] == 3


def test_a_style_image_too_small_to_train_on_is_refused_before_anything_loads(
    small_photos: Path, tiny_extractor: torch.nn.Module
) -> None:
    """A 1x1 painting reached VGG's pooling and failed there ("Output size is too small")."""
    from service.training import MIN_STYLE_SIDE as API_MIN_STYLE_SIDE
    from service.uploads import UploadInfo
    from stylenet.exceptions import InvalidImage
    from stylenet.imageio import fit_size
    from stylenet.training import MIN_STYLE_SIDE, check_style_image

    assert API_MIN_STYLE_SIDE == MIN_STYLE_SIDE  # the API refuses what the worker would
    for size, style_size in [((1, 1), 256), ((31, 400), 512), ((1000, 40), 256), ((2000, 20), 2000)]:
        with pytest.raises(InvalidImage, match=f"at least {MIN_STYLE_SIDE} px"):
            check_style_image(size, style_size)
    for size, style_size in [((32, 32), 256), ((1000, 125), 256), ((4000, 3000), 48)]:
        check_style_image(size, style_size)
    for width in range(1, 300, 7):  # the API's rounding is fit_size's
        for height, style_size in [(13, 64), (250, 100), (299, 299)]:
            fitted = (width, height) if max(width, height) <= style_size else fit_size((width, height), style_size)
            assert UploadInfo("PNG", width, height, frames=1).fitted(style_size) == fitted
    with pytest.raises(InvalidImage):
        train(small_photos, Image.new("RGB", (40, 8)), SMALL, _recipe(), extractor=tiny_extractor)


def test_a_loss_that_is_not_finite_stops_training(
    tmp_path: Path, small_photos: Path, style_image: Image.Image, tiny_extractor: torch.nn.Module
) -> None:
    """A weight too large made the loss inf/NaN: every later step trained on it, and the NaN
    generator was exported and published. Training stops at the first such loss instead."""
    with pytest.raises(TrainingDiverged, match=r"not finite at iteration 1 .*lower the learning rate"):
        train(small_photos, style_image, SMALL, _recipe(style_weight=1e308), extractor=tiny_extractor)


def test_export_refuses_a_generator_whose_output_is_not_finite(tmp_path: Path) -> None:
    from stylenet.exceptions import ExportMismatch
    from stylenet.export import export_generator
    from stylenet.generator import build_generator

    model = build_generator(SMALL).eval()
    with torch.no_grad():
        next(iter(model.parameters())).fill_(float("nan"))
    with pytest.raises(ExportMismatch, match="not finite"):
        export_generator(model, tmp_path / "g.ts")
    assert not (tmp_path / "g.ts").exists()


def test_resume_refuses_another_style_image_or_photo_set(
    tmp_path: Path, small_photos: Path, style_image: Image.Image, tiny_extractor: torch.nn.Module
) -> None:
    ckpt = tmp_path / "ckpt.pt"
    train(small_photos, style_image, SMALL, _recipe(iterations=3), extractor=tiny_extractor, checkpoint_path=ckpt)
    other_style = style_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    with pytest.raises(CheckpointError, match="other style image"):
        train(small_photos, other_style, SMALL, _recipe(), extractor=tiny_extractor, checkpoint_path=ckpt, resume=True)
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for photo in sorted(small_photos.iterdir())[1:]:
        (fewer / photo.name).write_bytes(photo.read_bytes())
    with pytest.raises(CheckpointError, match="other photos"):
        train(fewer, style_image, SMALL, _recipe(), extractor=tiny_extractor, checkpoint_path=ckpt, resume=True)
    copy = tmp_path / "copy"  # the same photos elsewhere: the same run
    copy.mkdir()
    for photo in sorted(small_photos.iterdir()):
        (copy / photo.name).write_bytes(photo.read_bytes())
    result = train(copy, style_image, SMALL, _recipe(), extractor=tiny_extractor, checkpoint_path=ckpt, resume=True)
    assert result.resumed_from == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not a checkpoint file"),  # text
        (b"", r"EOFError|Ran out of input"),
        ([1, 2], "holds a list"),
        ({"format": 1, "config": {}}, "missing: recipe"),
    ],
)
def test_a_malformed_checkpoint_is_one_clear_error(tmp_path: Path, content: object, message: str) -> None:
    from stylenet.training import load_checkpoint

    path = tmp_path / "checkpoint.pt"
    if content is None:
        path.write_text("not a checkpoint\n")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message) as caught:
        load_checkpoint(path, SMALL, _recipe())
    assert "\n" not in str(caught.value)
