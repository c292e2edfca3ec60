"""The paper's ablation, reproducible from one command: batch vs instance normalization.

Ulyanov, Vedaldi & Lempitsky (arXiv:1607.08022) ask, with figures only:

* RQ1 -- does instance normalization improve fast stylization over batch normalization?
* RQ2 -- is applying it at test time important (versus frozen, running-average statistics)?
* RQ3 -- do both generators (Johnson's residual net, Ulyanov's multi-scale net) benefit?

``run_ablation`` trains, for each architecture, a ``batch`` generator and an instance-norm
generator with the same recipe, seed, photos and style, then measures three test-time variants
on held-out photos: ``batch`` (running statistics), ``instance`` (per-image statistics, the
paper) and ``instance-frozen`` (the same instance-norm weights, but with the running statistics
of its training: PyTorch's exponential moving averages, momentum 0.1, of the per-image
statistics, the unbiased variance's; so mostly those of the last few dozen crops).

``instance`` and ``instance-frozen`` differ only at test time, so they share one training run:
an ``InstanceNorm2d`` that tracks running statistics computes exactly what an untracked one
computes while training (tested in ``tests/stylenet/test_norm_property.py``). Sharing the
weights makes RQ2 a clean comparison: the only thing that changes is the statistics.

Every run checkpoints under ``OUT/runs/<arch>-<norm>/``; a finished run is not retrained and an
interrupted one resumes. The outputs (``report.md``, ``grid.png``, ``loss_curves.png``,
``results.json``) are rewritten at the end from the runs.
"""

from __future__ import annotations

import itertools
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch import nn

from stylenet.config import ARCHS, GeneratorConfig
from stylenet.data import PhotoDataset
from stylenet.evaluation import PHOTOMETRIC_CHANGES, contrast_sensitivity_per_photo, style_content_per_photo
from stylenet.exceptions import CheckpointError, StylenetError
from stylenet.generator import build_generator
from stylenet.imageio import image_to_tensor, list_images, load_image, resize_max, tensor_to_image
from stylenet.recipe import TrainRecipe
from stylenet.report import fit_cell
from stylenet.training import ProgressCallback, pick_device, train, training_data
from stylenet.vgg import FeatureExtractor, load_vgg

#: Test-time variants, in report order.
VARIANTS: tuple[str, ...] = ("batch", "instance", "instance-frozen")
#: The norm each variant is trained with (see the module docstring).
TRAINED_NORM: dict[str, str] = {"batch": "batch", "instance": "instance-frozen", "instance-frozen": "instance-frozen"}
RESULTS_FORMAT = 1


class AblationError(StylenetError):
    """Bad ablation inputs (overlapping holdout, too few photos, a run folder from other settings)."""


#: The measures read VGG's relu4_1, after three 2x2 poolings: a held-out photo's short side needs
#: 8 px there, and the eval size (its long side) at least twice that.
MIN_EVAL_SIDE = 8
MIN_EVAL_SIZE = 16


@dataclass(frozen=True)
class AblationPreset:
    name: str
    recipe: TrainRecipe
    holdout_count: int
    eval_size: int  # long side (px) of the held-out photos when measuring
    johnson: GeneratorConfig
    ulyanov: GeneratorConfig
    rationale: str

    def __post_init__(self) -> None:
        if not MIN_EVAL_SIZE <= self.eval_size <= 4096:
            raise ValueError(f"invalid eval_size {self.eval_size}: valid: {MIN_EVAL_SIZE} to 4096 px")
        if self.holdout_count < 1:
            raise ValueError(f"invalid holdout_count {self.holdout_count}: at least 1")

    def config(self, arch: str, norm: str) -> GeneratorConfig:
        base = self.johnson if arch == "johnson" else self.ulyanov
        return replace(base, norm=norm)  # type: ignore[arg-type]


PRESETS: dict[str, AblationPreset] = {
    "cpu": AblationPreset(
        name="cpu",
        recipe=TrainRecipe(iterations=2000, batch_size=2, image_size=128, style_size=256, precision="bf16"),
        holdout_count=6,
        eval_size=192,
        johnson=GeneratorConfig(arch="johnson"),
        ulyanov=GeneratorConfig(arch="ulyanov"),
        rationale=(
            "Four training runs must fit in 90 minutes on 2 CPU cores. Measured here (bf16 autocast, VGG-19 "
            "to relu4_1): 0.39-0.43 s per iteration for the Johnson net and 0.33-0.35 s for the Ulyanov net at "
            "128-px crops and batch 2, so 2000 iterations per run cost about 50 minutes in all, leaving room "
            "for loading and evaluation. The published generators are kept at full width, because the "
            "question is about them; the crops are halved from 256 px instead, with the style image at 256 px "
            "so the texture scale relative to the crop is the same as at 256/512. Holdout photos are measured "
            "at 192 px long side, the scale at which training crops see the photos (1.5x crop short side "
            "cache, crops covering 35-100 % of it). Six holdout photos keep evaluation under two minutes."
        ),
    ),
    "paper": AblationPreset(
        name="paper",
        recipe=TrainRecipe(iterations=40000, batch_size=4, image_size=256, style_size=512, precision="bf16"),
        holdout_count=16,
        eval_size=512,
        johnson=GeneratorConfig(arch="johnson"),
        ulyanov=GeneratorConfig(arch="ulyanov"),
        rationale=(
            "Johnson et al.'s published recipe (256-px crops, batch 4, 40k iterations = two epochs of "
            "COCO, Adam at 1e-3) for both generators; needs a GPU (hours on CPU)."
        ),
    ),
}


@dataclass(frozen=True)
class AblationSpec:
    photos: Path
    style: Path
    holdout: Path
    out: Path
    preset: AblationPreset
    device: str | None = None
    exclude_holdout: bool = False  # drop training photos that are copies of holdout photos

    @property
    def recipe(self) -> TrainRecipe:
        return self.preset.recipe


@dataclass
class RunOutcome:
    """One training run (``arch`` x trained norm)."""

    arch: str
    norm: str
    model: nn.Module
    history: list[dict[str, float]]
    wall_time_s: float
    seconds_per_iteration: float
    reused: bool  # True when loaded from a finished run instead of trained now


@dataclass
class AblationResult:
    results: dict[str, Any]
    out: Path
    runs: list[RunOutcome] = field(default_factory=list)


#: Builds the progress callback of one training run: (run name, total iterations) -> callback.
CallbackFactory = Callable[[str, int], ProgressCallback]


def run_name(arch: str, norm: str) -> str:
    return f"{arch}-{norm}"


#: Two photos are "the same" when their 32x32 thumbnails differ by less than this (mean |diff|
#: in [0, 1]) and their aspect ratios by less than 2 %: catches resized or re-encoded copies.
SAME_PHOTO_THRESHOLD = 0.03


def _fingerprint(path: Path) -> tuple[float, torch.Tensor] | None:
    try:
        img = load_image(path)
    except StylenetError:
        return None
    return img.width / img.height, image_to_tensor(img.resize((32, 32), Image.Resampling.BOX))


def _same_photo(a: tuple[float, torch.Tensor], b: tuple[float, torch.Tensor]) -> bool:
    return abs(a[0] / b[0] - 1) < 0.02 and float((a[1] - b[1]).abs().mean()) < SAME_PHOTO_THRESHOLD


def split_photos(spec: AblationSpec) -> tuple[list[Path], list[Path]]:
    """(holdout photos, training photos that are copies of one of them).

    The holdout is the first ``holdout_count`` photos of ``--holdout``. A training photo that is
    a copy of a holdout photo (same picture, even resized or re-encoded) is an error unless
    ``spec.exclude_holdout``, in which case it is returned for exclusion from training.
    """
    holdout = list_images(spec.holdout)[: spec.preset.holdout_count]
    if not holdout:
        raise AblationError(f"no jpg/png/webp photos found below holdout folder {spec.holdout}")
    prints = {p: _fingerprint(p) for p in holdout}
    copies: list[Path] = []
    for train_path in list_images(spec.photos):
        fp = _fingerprint(train_path)
        twin = next((h for h, hp in prints.items() if fp and hp and _same_photo(fp, hp)), None)
        if twin is None:
            continue
        if not spec.exclude_holdout:
            raise AblationError(
                f"holdout photo {twin} is also a training photo ({train_path}); "
                "carve the holdout out of the training folder, or pass --exclude-holdout"
            )
        copies.append(train_path)
    return holdout, copies


def _strip_running_stats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    drop = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v for k, v in state.items() if not k.endswith(drop)}


def variant_model(run: RunOutcome, variant: str, preset: AblationPreset) -> nn.Module:
    """The trained weights of ``run`` as ``variant`` at test time, in eval mode, fp32 on CPU."""
    if TRAINED_NORM[variant] != run.norm:
        raise ValueError(f"variant {variant} is not trained as {run.norm}")
    model = build_generator(preset.config(run.arch, variant))
    state = {k: v.detach().float().cpu() for k, v in run.model.state_dict().items()}
    if variant == "instance":
        state = _strip_running_stats(state)
    model.load_state_dict(state)
    return model.eval()


def seconds_per_iteration(history: Sequence[dict[str, float]], wall_time_s: float, iterations: int) -> float:
    """Median time per iteration over the logged windows: robust to a short stretch of CPU shared
    with another process (the mean, wall time / iterations, is kept in ``wall_time_s``)."""
    rates = [
        (b["elapsed_s"] - a["elapsed_s"]) / (b["iteration"] - a["iteration"])
        for a, b in itertools.pairwise(history)
        if b["iteration"] > a["iteration"] and b["elapsed_s"] > a["elapsed_s"]
    ]
    return statistics.median(rates) if rates else wall_time_s / iterations


#: The "final" training loss averages the last this fraction of the logged windows (a single
#: window of a batch-2 run is noisy).
FINAL_FRACTION = 0.05


def final_training_losses(history: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean weighted loss terms over the last ``FINAL_FRACTION`` of the logged windows."""
    if not history:
        return {}
    tail = history[-max(1, round(len(history) * FINAL_FRACTION)) :]
    keys = [k for k in tail[0] if k not in ("iteration", "elapsed_s")]
    return {k: statistics.fmean(h[k] for h in tail) for k in keys}


def preset_overrides(preset: AblationPreset) -> dict[str, Any]:
    """What differs from the preset of the same name (the CLI's --iterations, --eval-size, ...)."""
    base = PRESETS.get(preset.name)
    if base is None:
        return {}
    changed: dict[str, Any] = {}
    ours, theirs = preset.recipe.to_dict(), base.recipe.to_dict()
    changed.update({k: v for k, v in ours.items() if theirs.get(k) != v})
    for name in ("holdout_count", "eval_size"):
        if getattr(preset, name) != getattr(base, name):
            changed[name] = getattr(preset, name)
    return changed


def _train_run(
    spec: AblationSpec,
    arch: str,
    norm: str,
    dataset: PhotoDataset,
    style: Image.Image,
    extractor: FeatureExtractor,
    callback_factory: CallbackFactory | None,
) -> RunOutcome:
    config = spec.preset.config(arch, norm)
    recipe = spec.recipe
    folder = spec.out / "runs" / run_name(arch, norm)
    folder.mkdir(parents=True, exist_ok=True)
    done_file, weights_file, ckpt = folder / "result.json", folder / "weights.pt", folder / "checkpoint.pt"
    data = training_data(style, recipe.style_size, dataset)
    if done_file.is_file() and weights_file.is_file():
        done = json.loads(done_file.read_text())
        if done["config"] != config.to_dict() or done["recipe"] != recipe.to_dict():
            raise AblationError(
                f"{folder} holds a finished run with other settings; use another --out or delete that folder"
            )
        for key, what in (("style", "style image"), ("photos", "photos")):  # none kept before: not checked
            if key in done.get("data", {}) and done["data"][key] != data[key]:
                raise AblationError(
                    f"{folder} holds a finished run on other {what}; use another --out or delete that folder"
                )
        model = build_generator(config)
        model.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
        spi = seconds_per_iteration(done["history"], done["wall_time_s"], recipe.iterations)
        return RunOutcome(arch, norm, model.eval(), done["history"], done["wall_time_s"], spi, reused=True)
    callback = callback_factory(run_name(arch, norm), recipe.iterations) if callback_factory else None
    try:
        result = train(
            dataset, style, config, recipe, device=spec.device, checkpoint_path=ckpt, resume=ckpt.is_file(),
            callback=callback, extractor=extractor,
        )  # fmt: skip
    except CheckpointError as exc:
        raise AblationError(f"{exc}; use another --out or delete {folder}") from exc
    model = result.generator.float().cpu().eval()
    spi = seconds_per_iteration(result.history, result.wall_time_s, recipe.iterations)
    torch.save(model.state_dict(), weights_file)
    done_file.write_text(
        json.dumps(
            {
                "config": config.to_dict(),
                "recipe": recipe.to_dict(),
                "history": result.history,
                "wall_time_s": result.wall_time_s,
                "data": data,
            },
            indent=1,
        )
    )
    ckpt.unlink(missing_ok=True)  # result.json + weights.pt now stand for the finished run
    return RunOutcome(arch, norm, model, result.history, result.wall_time_s, spi, reused=False)


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


@torch.no_grad()
def measure(
    model: nn.Module,
    photos: Sequence[torch.Tensor],
    style: torch.Tensor,
    extractor: FeatureExtractor,
    recipe: TrainRecipe,
) -> dict[str, Any]:
    """Per-photo and averaged holdout measures of one test-time model (see ``stylenet.evaluation``)."""
    distances = style_content_per_photo(model, photos, style, extractor, recipe.content_layers, recipe.style_layers)
    sensitivities = contrast_sensitivity_per_photo(model, photos)
    per_photo = [
        {
            "style_distance": d["style_distance"],
            "relative_style_distance": d["relative_style_distance"],
            "content_distance": d["content_distance"],
            "holdout_loss": recipe.content_weight * d["content_distance"] + recipe.style_weight * d["style_distance"],
            **{f"sensitivity_{k}": v for k, v in c.items()},
        }
        for d, c in zip(distances, sensitivities, strict=True)
    ]
    keys = list(per_photo[0])
    return {
        "mean": {k: statistics.fmean(r[k] for r in per_photo) for k in keys},
        "std": {k: _std([r[k] for r in per_photo]) for k in keys},
        "per_photo": per_photo,
    }


def run_ablation(
    spec: AblationSpec,
    *,
    callback_factory: CallbackFactory | None = None,
    log: Callable[[str], None] = lambda message: None,
    extractor: FeatureExtractor | None = None,
    command: str = "",
) -> AblationResult:
    """Train every run (resuming/reusing what ``spec.out`` holds), measure, write the report."""
    if not spec.style.is_file():
        raise AblationError(f"style image {spec.style} not found")
    holdout, excluded = split_photos(spec)
    if excluded:
        log(f"excluding {len(excluded)} training photos that are copies of holdout photos")
    recipe = spec.recipe
    dataset = PhotoDataset(spec.photos, recipe.image_size, recipe.crop_scale, exclude=excluded)
    style_img = load_image(spec.style)
    # before any training: a photo too small to measure at eval_size failed after all four
    holdout_imgs = [resize_max(load_image(p), spec.preset.eval_size) for p in holdout]
    for path, img in zip(holdout, holdout_imgs, strict=True):
        if min(img.size) < MIN_EVAL_SIDE:
            raise AblationError(
                f"holdout photo {path.name} is {img.width}x{img.height} px at an eval size of "
                f"{spec.preset.eval_size} px: its short side needs {MIN_EVAL_SIDE} px or more"
            )
    dev = pick_device(spec.device)
    vgg = extractor if extractor is not None else load_vgg(recipe.vgg_weights, device=dev)
    spec.out.mkdir(parents=True, exist_ok=True)

    runs: list[RunOutcome] = []
    for arch in ARCHS:
        for norm in dict.fromkeys(TRAINED_NORM.values()):
            run = _train_run(spec, arch, norm, dataset, style_img, vgg, callback_factory)
            if run.reused:
                log(f"{run_name(arch, norm)}: finished earlier, reusing its weights")
            runs.append(run)

    log(f"measuring {len(ARCHS) * len(VARIANTS)} variants on {len(holdout)} holdout photos")
    # measured in fp32 on the CPU: reuse the training VGG unless it sits on another device
    eval_vgg = vgg if extractor is not None or dev.type == "cpu" else load_vgg(recipe.vgg_weights)
    photos = [image_to_tensor(img) for img in holdout_imgs]
    style_t = image_to_tensor(resize_max(style_img, recipe.style_size)).unsqueeze(0)
    rows: list[dict[str, Any]] = []
    outputs: dict[str, list[Image.Image]] = {}
    by_key = {(r.arch, r.norm): r for r in runs}
    for arch in ARCHS:
        for variant in VARIANTS:
            run = by_key[(arch, TRAINED_NORM[variant])]
            model = variant_model(run, variant, spec.preset)
            t0 = time.perf_counter()
            measures = measure(model, photos, style_t, eval_vgg, recipe)
            log(f"  {arch}/{variant}: measured in {time.perf_counter() - t0:.1f} s")
            rows.append(
                {
                    "arch": arch,
                    "variant": variant,
                    "trained_as": run_name(arch, run.norm),
                    "final_losses": final_training_losses(run.history),
                    "seconds_per_iteration": run.seconds_per_iteration,
                    "wall_time_s": run.wall_time_s,
                    "parameters": sum(p.numel() for p in model.parameters()),
                    **measures,
                }
            )
            with torch.no_grad():
                outputs[f"{arch}/{variant}"] = [
                    tensor_to_image(model(p.unsqueeze(0)).float().clamp(0, 1)) for p in photos
                ]

    results = {
        "format": RESULTS_FORMAT,
        "command": command,
        "preset": spec.preset.name,
        "overrides": preset_overrides(spec.preset),
        "rationale": spec.preset.rationale,
        "recipe": recipe.to_dict(),
        "generators": {arch: spec.preset.config(arch, "instance").to_dict() for arch in ARCHS},
        "eval_size": spec.preset.eval_size,
        "photos": {
            "folder": str(spec.photos),
            "count": len(dataset),
            "excluded_copies_of_holdout": [p.name for p in excluded],
        },
        "style": spec.style.name,
        "holdout": [p.name for p in holdout],
        "photometric_changes": {k: {"contrast": c, "shift": s} for k, (c, s) in PHOTOMETRIC_CHANGES.items()},
        "device": str(dev),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "rows": rows,
        "answers": answer_questions(rows),
    }
    (spec.out / "results.json").write_text(json.dumps(results, indent=1))
    ablation_grid(holdout_imgs, style_img, outputs, cell=min(spec.preset.eval_size, 192)).save(spec.out / "grid.png")
    plot_loss_curves(runs, spec.out / "loss_curves.png")
    (spec.out / "report.md").write_text(render_report(results))
    log(f"wrote report.md, grid.png, loss_curves.png, results.json to {spec.out}")
    return AblationResult(results=results, out=spec.out, runs=runs)


# --- answers ------------------------------------------------------------------------------------

#: Relative differences below this are reported as "no clear difference".
TOLERANCE = 0.03
#: A verdict also needs the paired sign test over the holdout photos at this level (two-sided):
#: with six photos, all six must agree (p = 0.031); five of six is p = 0.22, not evidence.
SIGNIFICANCE = 0.05


def _rel(new: float, old: float) -> float:
    return (new - old) / old if old else float("nan")


def sign_test_p(lower: int, n: int) -> float:
    """Two-sided exact sign test: the chance of a split at least as uneven as ``lower`` of ``n``
    paired photos when either value is as likely to be the lower one."""
    if n == 0:
        return 1.0
    k = min(lower, n - lower)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _paired(a: dict[str, Any], b: dict[str, Any], key: str) -> tuple[int, int, float]:
    """(photos where ``a``'s value is the lower, photos, the sign test's p) for measure ``key``."""
    pairs = list(zip(a["per_photo"], b["per_photo"], strict=True))
    lower = sum(pa[key] < pb[key] for pa, pb in pairs)
    return lower, len(pairs), sign_test_p(lower, len(pairs))


def _compare(
    label: str, a: float, b: float, a_name: str, b_name: str, judge: bool = True, significant: bool = True
) -> str:
    """One line of evidence; ``judge=False`` says lower/higher instead of better/worse, and so
    does a difference the paired photos do not bear out (``significant=False``)."""
    rel = _rel(a, b)
    if abs(rel) < TOLERANCE:
        verdict = f"no clear difference (within {TOLERANCE:.0%})"
    elif not significant:
        verdict = f"{a_name} {'lower' if rel < 0 else 'higher'} by {abs(rel):.0%}, not significant"
    elif judge:
        verdict = f"{a_name} {'better' if rel < 0 else 'worse'} by {abs(rel):.0%}"
    else:
        verdict = f"{a_name} {'lower' if rel < 0 else 'higher'} by {abs(rel):.0%}"
    return f"{label}: {a_name} {a:.4g} vs {b_name} {b:.4g} -> {verdict}"


def _row(rows: Sequence[dict[str, Any]], arch: str, variant: str) -> dict[str, Any]:
    return next(r for r in rows if r["arch"] == arch and r["variant"] == variant)


def _better(a: dict[str, Any], b: dict[str, Any]) -> bool | None:
    """True/False when ``a``'s mean holdout loss is lower/higher than ``b``'s by more than the
    tolerance *and* the paired sign test over the photos says so (``SIGNIFICANCE``); else None."""
    rel = _rel(a["mean"]["holdout_loss"], b["mean"]["holdout_loss"])
    lower, n, p = _paired(a, b, "holdout_loss")
    if abs(rel) < TOLERANCE or p > SIGNIFICANCE or (lower > n / 2) != (rel < 0):
        return None
    return rel < 0


#: (label, measure key, judged as better/worse?) of the evidence lines; "final_loss" is training's.
#: The sensitivities are not evidence of quality: instance norm divides out a contrast change by
#: construction (up to its epsilon), and a net whose output barely depends on its input scores low.
EVIDENCE: tuple[tuple[str, str, bool], ...] = (
    ("holdout loss", "holdout_loss", True),
    ("style distance", "style_distance", True),
    ("content distance", "content_distance", True),
    ("final training loss", "final_loss", True),
    ("sensitivity to contrast x0.5 (instance norm removes it by construction)", "sensitivity_contrast_0.5", False),
    ("sensitivity, mean of the 4 changes", "sensitivity_mean", False),
)


def _value(row: dict[str, Any], key: str) -> float:
    return float(row["final_losses"]["total"] if key == "final_loss" else row["mean"][key])


def _evidence(a: dict[str, Any], b: dict[str, Any], a_name: str, b_name: str, skip: Sequence[str] = ()) -> list[str]:
    lines = []
    for label, key, judge in EVIDENCE:
        if key in skip:
            continue
        if key == "final_loss":  # one number per run: nothing to pair
            lines.append(_compare(label, _value(a, key), _value(b, key), a_name, b_name, judge))
            continue
        lower, n, p = _paired(a, b, key)  # on how many holdout photos is a's value the lower one?
        line = _compare(label, _value(a, key), _value(b, key), a_name, b_name, judge, p <= SIGNIFICANCE)
        lines.append(f"{line} ({a_name} lower on {lower} of {n} photos, sign test p = {p:.2g})")
    return lines


def _generalization(a: dict[str, Any], b: dict[str, Any], a_name: str, b_name: str) -> str:
    """How each net's holdout loss compares with its own final training loss: a gap that opens
    only on the holdout comes from the test-time statistics (RQ2's mechanism), not training."""
    parts = [
        f"{name} {_rel(float(r['mean']['holdout_loss']), float(r['final_losses']['total'])):+.0%}"
        for name, r in ((a_name, a), (b_name, b))
    ]
    return f"holdout loss against the net's own final training loss: {', '.join(parts)}"


def answer_questions(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The three research questions answered from the measured rows, with the supporting numbers."""
    rq1: dict[str, Any] = {}
    rq2: dict[str, Any] = {}
    for arch in ARCHS:
        bn, inst, frozen = (_row(rows, arch, v) for v in VARIANTS)
        evidence = [*_evidence(inst, bn, "IN", "BN"), _generalization(inst, bn, "IN", "BN")]
        rq1[arch] = {"instance_beats_batch": _better(inst, bn), "evidence": evidence}
        rq2[arch] = {
            "test_time_statistics_matter": _better(inst, frozen),
            # same weights, so the same training loss
            "evidence": _evidence(inst, frozen, "IN", "IN-frozen", skip=("final_loss",)),
        }
    return {
        "rq1": rq1,
        "rq2": rq2,
        "rq3": {"both_benefit": all(rq1[a]["instance_beats_batch"] is True for a in ARCHS)},
    }


def _overridden(results: dict[str, Any]) -> str:
    overrides = results.get("overrides") or {}
    return f" (overridden: {', '.join(f'{k} {v}' for k, v in overrides.items())})" if overrides else ""


def _yes_no(value: bool | None, yes: str, no: str, tie: str) -> str:
    return yes if value is True else no if value is False else tie


def render_report(results: dict[str, Any]) -> str:
    rows = results["rows"]
    recipe = results["recipe"]
    answers = results["answers"]
    lines = [
        "# Batch vs instance normalization: the ablation",
        "",
        "Reproduces the research questions of Ulyanov, Vedaldi & Lempitsky, *Instance Normalization: The "
        "Missing Ingredient for Fast Stylization* (arXiv:1607.08022), with numbers.",
        "",
        f"- Command: `{results['command']}`" if results["command"] else "- Command: (library call)",
        f"- Preset `{results['preset']}`{_overridden(results)}: {recipe['iterations']} iterations, "
        f"batch {recipe['batch_size']}, "
        f"{recipe['image_size']}-px crops, style image at {recipe['style_size']} px, lr {recipe['lr']}, "
        f"content weight {recipe['content_weight']}, style weight {recipe['style_weight']}, {recipe['precision']}, "
        f"seed {recipe['seed']}; {results['photos']['count']} training photos; style `{results['style']}`.",
        f"- Why these sizes: {results['rationale']}"
        if not results.get("overrides")
        else "- The preset's settings were overridden: its rationale does not hold for this run.",
        f"- Holdout ({len(results['holdout'])} photos never seen in training, measured at "
        f"{results['eval_size']} px long side): {', '.join(results['holdout'])}.",
        f"- Machine: {results['machine']} ({results['device']}), torch {results['torch']}.",
        "- `instance` and `instance-frozen` share one training run (an instance-norm net that tracks running "
        "statistics trains exactly like one that does not); they differ only in the statistics used at test time.",
        "",
        "## Measures",
        "",
        "Means over the holdout photos (± standard deviation across photos). *Style*: layer-normalized Gram "
        "distance to the style image (relative: divided by the unstylized photo's, photo by photo, then averaged; "
        "a style's manifest divides the averages instead). *Content*: layer-normalized "
        "feature distance to the photo. *Holdout loss*: the training objective on the holdout "
        "(content weight x content + style weight x style). *Contrast/brightness*: mean |G(changed photo) - "
        "G(photo)| in [0, 1] pixels, for contrast scaled x0.5 / x1.5 about the mean and brightness ±0.2. "
        "Lower is better everywhere except that low contrast sensitivity is the paper's *intuition*, not a goal. "
        f"*Final train loss*: the weighted training loss averaged over the last {FINAL_FRACTION:.0%} of the "
        "iterations. *s/iter*: median "
        "seconds per training iteration over the logged windows; *train min*: wall time of the run.",
        "",
        "| generator | test-time norm | holdout loss | style | rel. style | content | contrast x0.5 | "
        "contrast x1.5 | bright. -0.2 | bright. +0.2 | final train loss | s/iter | train min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, s = r["mean"], r["std"]

        def cell(key: str, m: dict[str, float] = m, s: dict[str, float] = s) -> str:
            return f"{m[key]:.4g} ± {s[key]:.2g}"

        lines.append(
            f"| {r['arch']} | {r['variant']} | {cell('holdout_loss')} | {cell('style_distance')} | "
            f"{m['relative_style_distance']:.3f} | {cell('content_distance')} | "
            f"{m['sensitivity_contrast_0.5']:.4f} | {m['sensitivity_contrast_1.5']:.4f} | "
            f"{m['sensitivity_brightness_-0.2']:.4f} | {m['sensitivity_brightness_+0.2']:.4f} | "
            f"{r['final_losses'].get('total', float('nan')):.4g} | {r['seconds_per_iteration']:.3f} | "
            f"{r['wall_time_s'] / 60:.1f} |"
        )
    lines += ["", "![grid](grid.png)", "", "![loss curves](loss_curves.png)", ""]
    lines += ["## RQ1: does instance normalization improve over batch normalization?", ""]
    for arch, a in answers["rq1"].items():
        verdict = _yes_no(a["instance_beats_batch"], "**yes**", "**no, the opposite**", "**no clear difference**")
        lines.append(f"- {arch}: {verdict} (by holdout loss).")
        lines += [f"  - {e}" for e in a["evidence"]]
    lines += [
        "",
        f"Batch norm here is batch {recipe['batch_size']} in training and running statistics at test time: where "
        "its holdout loss grows past its training loss while instance norm's does not, that part of the gap is "
        "the test-time statistics (RQ2's mechanism), not what training learned.",
    ]
    lines += ["", "## RQ2: is instance normalization at test time important?", ""]
    for arch, a in answers["rq2"].items():
        verdict = _yes_no(
            a["test_time_statistics_matter"],
            "**yes**: per-image statistics beat frozen ones",
            "**no, the opposite**: frozen statistics did better",
            "**no clear difference**",
        )
        lines.append(f"- {arch}: {verdict} (by holdout loss).")
        lines += [f"  - {e}" for e in a["evidence"]]
    lines += ["", "## RQ3: do both generators benefit?", ""]
    per_arch = ", ".join(
        f"{arch}: {_yes_no(a['instance_beats_batch'], 'yes', 'no (BN better)', 'no clear difference')}"
        for arch, a in answers["rq1"].items()
    )
    both = "**yes**" if answers["rq3"]["both_benefit"] else "**not both**"
    lines += [f"- {both} -- {per_arch}.", ""]
    lines += [
        f"A verdict needs the mean holdout losses {TOLERANCE:.0%} or more apart *and* the paired sign test over "
        f"the holdout photos at p <= {SIGNIFICANCE:g} (with six photos: all six agree); otherwise it is "
        '"no clear difference". One seed and one style: the runs\' own spread from seed to seed is not '
        "measured. The ± columns are the spread across holdout photos. *Frozen* statistics are PyTorch's "
        "running statistics: exponential moving averages (momentum 0.1) of the training batches' statistics, "
        "so mostly the last few dozen crops'. Every number is in `results.json`.",
        "",
    ]
    return "\n".join(lines)


# --- pictures -----------------------------------------------------------------------------------


def ablation_grid(
    photos: Sequence[Image.Image], style: Image.Image, outputs: dict[str, list[Image.Image]], cell: int = 192
) -> Image.Image:
    """Rows: the photos, then one row per ``arch/variant``; the first column holds the style image."""
    pad, label_w = 4, 130
    rows = [("holdout photos", list(photos)), *outputs.items()]
    width = label_w + (len(photos) + 1) * (cell + pad) + pad
    grid = Image.new("RGB", (width, len(rows) * (cell + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    grid.paste(fit_cell(style, cell), (label_w + pad, pad))
    draw.text((label_w + pad, pad + cell - 14), "style", fill=(255, 255, 255))
    for r, (label, images) in enumerate(rows):
        y = pad + r * (cell + pad)
        draw.text((pad, y + cell // 2 - 6), label, fill=(0, 0, 0))
        for c, img in enumerate(images):
            grid.paste(fit_cell(img, cell), (label_w + pad + (c + 1) * (cell + pad), y))
    return grid


def plot_loss_curves(runs: Sequence[RunOutcome], path: Path) -> None:
    """Total training loss per run, one panel per generator (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(r.arch for r in runs))
    fig, axes = plt.subplots(1, len(archs), figsize=(6 * len(archs), 4), dpi=100, squeeze=False)
    for ax, arch in zip(axes[0], archs, strict=True):
        for run in (r for r in runs if r.arch == arch):
            its = [h["iteration"] for h in run.history]
            label = "BN" if run.norm == "batch" else "IN (instance / instance-frozen)"
            line = ax.plot(its, [h["total"] for h in run.history], label=f"{label} total")[0]
            ax.plot(its, [h["style"] for h in run.history], ls="--", color=line.get_color(), label=f"{label} style")
        ax.set_yscale("log")
        ax.set_title(f"{arch} generator")
        ax.set_xlabel("iteration")
        ax.set_ylabel("weighted training loss")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
