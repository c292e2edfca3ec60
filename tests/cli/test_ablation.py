"""``instyle ablation`` end to end on tiny sizes, its resume contract and its holdout guard."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from instyle.ablation import (
    PRESETS,
    VARIANTS,
    AblationError,
    AblationSpec,
    RunOutcome,
    run_ablation,
    split_photos,
    variant_model,
)
from instyle.cli import main
from stylenet.config import GeneratorConfig
from stylenet.generator import build_generator
from tests.conftest import ASSET_STYLE, TinyFeatures

TINY = ["--iterations", "3", "--image-size", "32", "--style-size", "64", "--eval-size", "48", "--holdout-count", "2"]


@pytest.fixture
def split(tmp_path: Path, small_photos: Path) -> tuple[Path, Path]:
    """(training folder, holdout folder): the bundled photos, two of them held out."""
    train, holdout = tmp_path / "train", tmp_path / "holdout"
    train.mkdir()
    holdout.mkdir()
    for i, photo in enumerate(sorted(small_photos.glob("*.jpg"))):
        shutil.copy(photo, (holdout if i < 2 else train) / photo.name)
    return train, holdout


def _spec(train: Path, holdout: Path, out: Path, **recipe: int) -> AblationSpec:
    preset = PRESETS["cpu"]
    fields = {"iterations": 3, "image_size": 32, "style_size": 64, "batch_size": 2, "checkpoint_every": 1}
    fields.update(recipe)
    preset = dataclasses.replace(
        preset, recipe=dataclasses.replace(preset.recipe, **fields), holdout_count=2, eval_size=48
    )
    return AblationSpec(train, ASSET_STYLE, holdout, out, preset, device="cpu")


@pytest.mark.slow
def test_ablation_command_end_to_end(
    split: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, holdout = split
    out = tmp_path / "out"
    args = ["ablation", "--photos", str(train), "--style", str(ASSET_STYLE), "--holdout", str(holdout)]
    assert main([*args, "--out", str(out), "--device", "cpu", *TINY]) == 0
    captured = capsys.readouterr()
    assert "johnson: holdout loss: IN" in captured.out and "training ulyanov-batch" in captured.err

    results = json.loads((out / "results.json").read_text())
    rows = {(r["arch"], r["variant"]): r for r in results["rows"]}
    assert set(rows) == {(a, v) for a in ("johnson", "ulyanov") for v in VARIANTS}
    assert results["holdout"] == sorted(p.name for p in holdout.iterdir())
    assert results["photos"]["count"] == 4 and results["recipe"]["iterations"] == 3
    assert results["command"].startswith("instyle ablation --photos ") and "--iterations 3" in results["command"]
    for row in rows.values():
        assert len(row["per_photo"]) == 2
        assert all(math.isfinite(v) and v >= 0 for v in row["mean"].values())
        assert row["final_losses"]["total"] > 0 and row["seconds_per_iteration"] > 0
    # same weights, different test-time statistics: different outputs
    assert rows[("johnson", "instance")]["per_photo"] != rows[("johnson", "instance-frozen")]["per_photo"]
    # instance and instance-frozen share their training run; batch has its own
    assert rows[("johnson", "instance")]["trained_as"] == rows[("johnson", "instance-frozen")]["trained_as"]
    assert rows[("johnson", "batch")]["final_losses"] != rows[("johnson", "instance")]["final_losses"]
    assert set(results["answers"]) == {"rq1", "rq2", "rq3"}

    report = (out / "report.md").read_text()
    for heading in ("## RQ1", "## RQ2", "## RQ3", "| johnson | instance-frozen |", "| ulyanov | batch |"):
        assert heading in report
    cell, pad, label_w = 48, 4, 130
    with Image.open(out / "grid.png") as grid:  # style + 2 photos; 1 + 6 rows
        assert grid.size == (label_w + 3 * (cell + pad) + pad, 7 * (cell + pad) + pad)
    with Image.open(out / "loss_curves.png") as curves:
        assert curves.width > 0

    # a second invocation reuses every finished run instead of retraining
    assert main([*args, "--out", str(out), "--device", "cpu", *TINY]) == 0
    err = capsys.readouterr().err
    assert err.count("finished earlier, reusing its weights") == 4 and "training " not in err
    again = json.loads((out / "results.json").read_text())
    assert again["rows"][0]["final_losses"] == results["rows"][0]["final_losses"]


def test_interrupted_ablation_resumes_where_it_stopped(split: tuple[Path, Path], tmp_path: Path) -> None:
    train, holdout = split
    spec = _spec(train, holdout, tmp_path / "out", iterations=4)
    extractor = TinyFeatures()
    started: list[str] = []

    def crash_in_third_run(name: str, total: int):  # type: ignore[no-untyped-def]
        started.append(name)

        def callback(progress, model):  # type: ignore[no-untyped-def]
            if len(started) == 3 and progress.iteration == 3:  # a Ctrl-C after iteration 3
                raise KeyboardInterrupt

        return callback

    spec = dataclasses.replace(
        spec, preset=dataclasses.replace(spec.preset, recipe=dataclasses.replace(spec.recipe, log_every=1))
    )
    with pytest.raises(KeyboardInterrupt):
        run_ablation(spec, callback_factory=crash_in_third_run, extractor=extractor)
    runs = spec.out / "runs"
    assert (runs / "johnson-batch" / "result.json").is_file()
    assert (runs / "johnson-instance-frozen" / "result.json").is_file()
    assert (runs / "ulyanov-batch" / "checkpoint.pt").is_file()
    assert not (runs / "ulyanov-batch" / "result.json").exists()

    resumed: list[int] = []

    def watch(name: str, total: int):  # type: ignore[no-untyped-def]
        started.append(name)

        def callback(progress, model):  # type: ignore[no-untyped-def]
            resumed.append(progress.iteration)

        return callback

    messages: list[str] = []
    started.clear()
    result = run_ablation(spec, callback_factory=watch, extractor=extractor, log=messages.append)
    assert started == ["ulyanov-batch", "ulyanov-instance-frozen"]  # the finished runs are not retrained
    assert resumed[0] == 4  # ulyanov-batch carries on after iteration 3, which the Ctrl-C saved
    assert sum("reusing" in m for m in messages) == 2
    assert len(result.results["rows"]) == 6 and (spec.out / "report.md").is_file()


def test_a_finished_run_from_other_settings_is_refused(split: tuple[Path, Path], tmp_path: Path) -> None:
    train, holdout = split
    out = tmp_path / "out"
    run_ablation(_spec(train, holdout, out, iterations=2), extractor=TinyFeatures())
    with pytest.raises(AblationError, match="other settings"):
        run_ablation(_spec(train, holdout, out, iterations=2, image_size=48), extractor=TinyFeatures())
    # another painting (its runs were reported under the new one's name), or other photos
    flipped = tmp_path / "flipped.jpg"
    Image.open(ASSET_STYLE).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped)
    spec = dataclasses.replace(_spec(train, holdout, out, iterations=2), style=flipped)
    with pytest.raises(AblationError, match="finished run on other style image"):
        run_ablation(spec, extractor=TinyFeatures())
    next(iter(sorted(train.glob("*.jpg")))).unlink()
    with pytest.raises(AblationError, match="finished run on other photos"):
        run_ablation(_spec(train, holdout, out, iterations=2), extractor=TinyFeatures())


def test_a_holdout_photo_in_the_training_set_is_refused_or_excluded(split: tuple[Path, Path], tmp_path: Path) -> None:
    train, holdout = split
    leaked = sorted(holdout.iterdir())[0]
    with Image.open(leaked) as copy:
        copy.resize((copy.width * 2, copy.height * 2)).save(train / "resized-copy.jpg", quality=80)
    spec = _spec(train, holdout, tmp_path / "out")
    with pytest.raises(AblationError, match="also a training photo"):
        split_photos(spec)
    photos, excluded = split_photos(dataclasses.replace(spec, exclude_holdout=True))
    assert len(photos) == 2 and [p.name for p in excluded] == ["resized-copy.jpg"]


def test_cli_reports_a_leaked_holdout_in_one_line(
    split: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, holdout = split
    shutil.copy(sorted(holdout.iterdir())[0], train / "leak.jpg")
    args = ["ablation", "--photos", str(train), "--style", str(ASSET_STYLE), "--holdout", str(holdout)]
    assert main([*args, "--out", str(tmp_path / "out"), *TINY]) == 2
    assert "--exclude-holdout" in capsys.readouterr().err


def test_an_eval_size_too_small_to_measure_is_refused_before_training(
    split: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--eval-size 8 trained all four nets, then VGG's pooling failed with a traceback."""
    train, holdout = split
    args = ["ablation", "--photos", str(train), "--style", str(ASSET_STYLE), "--holdout", str(holdout)]
    tiny = [*TINY[:-4], "--holdout-count", "2"]  # without its --eval-size
    assert main([*args, "--out", str(tmp_path / "out"), *tiny, "--eval-size", "8"]) == 2  # VGG: 16 at least
    assert "invalid eval_size 8: valid: 16 to 4096 px" in capsys.readouterr().err
    Image.new("RGB", (400, 40), "gray").save(holdout / "0000_strip.png")  # 48 px wide: 5 px high
    assert main([*args, "--out", str(tmp_path / "out"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "holdout photo 0000_strip.png is 48x5 px at an eval size of 48 px" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "runs").exists()


def test_variant_models_share_weights_and_differ_in_statistics() -> None:
    torch.manual_seed(0)
    config = GeneratorConfig(arch="johnson", norm="instance-frozen", width=0.25)
    trained = build_generator(config).train()
    with torch.no_grad():
        for _ in range(3):
            trained(torch.rand(2, 3, 32, 32) * 0.5)
    run = RunOutcome("johnson", "instance-frozen", trained, [], 0.0, 0.0, reused=False)
    preset = dataclasses.replace(PRESETS["cpu"], johnson=dataclasses.replace(PRESETS["cpu"].johnson, width=0.25))
    inst, frozen = variant_model(run, "instance", preset), variant_model(run, "instance-frozen", preset)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        running = trained.eval()(x)  # before a train-mode call moves the running averages
        per_image = trained.train()(x)
        torch.testing.assert_close(frozen(x), running, atol=1e-5, rtol=0)
        torch.testing.assert_close(inst(x), per_image, atol=1e-5, rtol=0)
        assert float((per_image - running).abs().max()) > 1e-3
    with pytest.raises(ValueError):
        variant_model(run, "batch", preset)


def test_final_loss_and_time_per_iteration_are_robust_summaries() -> None:
    from instyle.ablation import final_training_losses, seconds_per_iteration

    history = [
        {"iteration": float(10 * i), "elapsed_s": float(i), "total": 100.0 - i, "content": 1.0, "style": 2.0}
        for i in range(1, 41)
    ]
    history[20]["elapsed_s"] += 30.0  # a stall (the CPU shared with something else) in one window
    for h in history[21:]:
        h["elapsed_s"] += 30.0
    final = final_training_losses(history)
    assert final["total"] == pytest.approx((100 - 39 + 100 - 40) / 2)  # last 5 % = 2 of 40 windows
    assert seconds_per_iteration(history, wall_time_s=70.0, iterations=400) == pytest.approx(0.1)
    assert seconds_per_iteration([], wall_time_s=70.0, iterations=400) == pytest.approx(0.175)
    assert final_training_losses([]) == {}


def test_verdicts_need_the_paired_photos_to_agree() -> None:
    """A 3 % difference in means decided a verdict alone: one photo could carry it. The sign test
    over the photos must bear it out too (six photos: all six)."""
    from instyle.ablation import answer_questions, sign_test_p

    assert sign_test_p(6, 6) == pytest.approx(2 / 64) and sign_test_p(0, 6) == pytest.approx(2 / 64)
    assert sign_test_p(5, 6) == pytest.approx(14 / 64) and sign_test_p(3, 6) == 1.0

    def row(arch: str, variant: str, losses: list[float]) -> dict[str, object]:
        keys = ("holdout_loss", "style_distance", "content_distance", "sensitivity_contrast_0.5", "sensitivity_mean")
        per_photo = [dict.fromkeys(keys, v) for v in losses]
        return {
            "arch": arch, "variant": variant, "final_losses": {"total": 1.0},
            "mean": dict.fromkeys(keys, sum(losses) / len(losses)), "per_photo": per_photo,
        }  # fmt: skip

    base = [1.0] * 6
    rows = [
        # johnson: instance lower on 5 of 6 photos, one photo carrying a 10 % lower mean
        row("johnson", "batch", base), row("johnson", "instance", [0.5, 0.99, 0.99, 0.99, 0.99, 1.04]),
        row("johnson", "instance-frozen", [2.0] * 6),
        # ulyanov: lower on every photo
        row("ulyanov", "batch", base), row("ulyanov", "instance", [0.8] * 6), row("ulyanov", "instance-frozen", base),
    ]  # fmt: skip
    answers = answer_questions(rows)
    assert answers["rq1"]["johnson"]["instance_beats_batch"] is None
    assert "not significant" in answers["rq1"]["johnson"]["evidence"][0]
    assert answers["rq1"]["ulyanov"]["instance_beats_batch"] is True
    assert answers["rq2"]["johnson"]["test_time_statistics_matter"] is True
    assert answers["rq3"]["both_benefit"] is False


def test_the_committed_report_is_its_results_rendered() -> None:
    from instyle.ablation import answer_questions, render_report
    from tests.conftest import REPO

    results = json.loads((REPO / "docs" / "ablation" / "results.json").read_text())
    assert results["answers"] == json.loads(json.dumps(answer_questions(results["rows"])))
    assert (REPO / "docs" / "ablation" / "report.md").read_text() == render_report(results)


def test_a_run_with_overridden_settings_says_so(split: tuple[Path, Path], tmp_path: Path) -> None:
    train, holdout = split
    result = run_ablation(_spec(train, holdout, tmp_path / "out", iterations=2), extractor=TinyFeatures())
    assert result.results["overrides"]["iterations"] == 2 and result.results["overrides"]["eval_size"] == 48
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Preset `cpu` (overridden: " in report and "its rationale does not hold" in report
