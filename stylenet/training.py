"""Perceptual-loss training of a feed-forward generator (Johnson et al. 2016; Ulyanov et al. 2016).

``train`` is a library function: no argparse, no printing. Progress goes to a callback (the CLI
draws a bar from it, the training job writes it to the job's status), checkpoints go to one file
written atomically, and ``resume=True`` continues from it with the iteration count, optimizer
state, loss history and random-number state restored.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from stylenet.config import GeneratorConfig
from stylenet.data import PhotoDataset
from stylenet.exceptions import CheckpointError, InvalidImage, TrainingDiverged, TrainingStopped
from stylenet.fast import cpu_has_native_bf16
from stylenet.generator import build_generator
from stylenet.imageio import fit_size, image_to_tensor, resize_max
from stylenet.losses import LossWeights, PerceptualLoss
from stylenet.recipe import BOOKKEEPING_FIELDS, MIN_STYLE_SIDE, TrainRecipe
from stylenet.vgg import FeatureExtractor, load_vgg

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
#: What every checkpoint holds (``data``, the training data's fingerprints, only the newer ones).
CHECKPOINT_KEYS = ("config", "recipe", "iteration", "model", "optimizer", "rng", "history", "elapsed_s")
#: Seconds of recent iterations the reported speed and ETA are measured over.
RATE_WINDOW_S = 30.0


@dataclass(frozen=True)
class TrainProgress:
    """A snapshot of a running training, handed to the progress callback."""

    iteration: int  # iterations completed
    total: int
    losses: dict[str, float]  # weighted terms, averaged since the previous report
    it_per_s: float
    eta_s: float
    elapsed_s: float


#: Called every ``log_every`` iterations with the progress and the generator (in train mode; a
#: callback that evaluates it must restore train mode). Raising stops the training.
ProgressCallback = Callable[[TrainProgress, nn.Module], None]


@dataclass
class TrainResult:
    generator: nn.Module  # in eval mode, on the training device
    config: GeneratorConfig
    recipe: TrainRecipe
    history: list[dict[str, float]] = field(default_factory=list)
    final_losses: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    seconds_per_iteration: float = 0.0
    resumed_from: int = 0


def pick_device(device: str | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def training_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of a recipe's ``precision`` on ``device`` (``auto``: bf16 only where
    the hardware computes it; an explicit ``bf16`` is honoured everywhere)."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return torch.float32
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    else:
        native = device.type == "cpu" and cpu_has_native_bf16()
    return torch.bfloat16 if native else torch.float32


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(
    path: Path, cfg: GeneratorConfig, recipe: TrainRecipe, data: dict[str, str] | None = None
) -> dict[str, Any]:
    """Read a checkpoint and check it belongs to the same network and recipe, and (``data``,
    ``training_data``'s fingerprints; checkpoints from before they were kept have none) to the
    same style image and photos."""
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message: six lines on weights_only for any non-checkpoint
        raise CheckpointError(f"cannot read checkpoint {path}: not a checkpoint file") from None
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {str(exc) or type(exc).__name__}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a training checkpoint (it holds a {type(state).__name__})")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {state.get('format')!r}")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a whole training checkpoint (missing: {', '.join(missing)})")
    theirs_data = state.get("data")
    if data is not None and isinstance(theirs_data, dict):
        for key, what in (("style", "style image"), ("photos", "photos")):
            if key in theirs_data and theirs_data[key] != data[key]:
                raise CheckpointError(
                    f"{path} was written for other {what}: resume with the {what} it started with, "
                    "or train anew without resuming"
                )
    if state["config"] != cfg.to_dict():
        raise CheckpointError(f"{path} was written for another generator config: {state['config']}")
    mine, theirs = recipe.to_dict(), dict(state["recipe"])
    for key in ("iterations", *BOOKKEEPING_FIELDS):  # a resume may extend the run or change its bookkeeping
        mine.pop(key, None)
        theirs.pop(key, None)
    if mine != theirs:
        diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        raise CheckpointError(f"{path} was written with a different recipe (differs in: {', '.join(diff)})")
    done = int(state["iteration"])
    if done > recipe.iterations:
        raise CheckpointError(
            f"{path} is at iteration {done}, past the {recipe.iterations} iterations asked for: resume with at "
            f"least {done} iterations, or train anew without resuming"
        )
    return state


def training_data(style_image: Image.Image, style_size: int, dataset: PhotoDataset) -> dict[str, str]:
    """Fingerprints of what a run trains on, kept in its checkpoints (and the ablation's finished
    runs) so that a resume on another painting or photo set is refused: the style image's pixels
    at ``style_size``, the photos' names."""
    pixels = resize_max(style_image.convert("RGB"), style_size).tobytes()
    return {"style": hashlib.sha256(pixels).hexdigest(), "photos": dataset.fingerprint()}


def check_style_image(size: tuple[int, int], style_size: int) -> None:
    """Raise ``InvalidImage`` if a style image of ``size`` (width, height) is too small to train
    on at ``style_size`` (``stylenet.recipe.MIN_STYLE_SIDE``)."""
    fitted = size if max(size) <= style_size else fit_size(size, style_size)
    if min(fitted) < MIN_STYLE_SIDE:
        raise InvalidImage(
            f"the style image is {size[0]}x{size[1]} px, {fitted[0]}x{fitted[1]} once fitted to style_size "
            f"{style_size}: its short side needs at least {MIN_STYLE_SIDE} px"
        )


def train(
    photos: str | Path | PhotoDataset,
    style_image: Image.Image,
    config: GeneratorConfig,
    recipe: TrainRecipe,
    *,
    device: str | torch.device | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    callback: ProgressCallback | None = None,
    extractor: FeatureExtractor | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a generator for ``style_image`` on ``photos``; see ``TrainRecipe`` for the knobs.

    ``extractor`` defaults to the VGG named by ``recipe.vgg_weights``; tests inject a tiny one.
    ``should_stop`` is asked before every iteration; when it answers True, ``TrainingStopped``
    is raised (the last checkpoint stays for a later resume).
    """
    check_style_image(style_image.size, recipe.style_size)  # before the photos and VGG load
    dev = pick_device(str(device) if device is not None else None)
    dataset = photos if isinstance(photos, PhotoDataset) else PhotoDataset(photos, recipe.image_size, recipe.crop_scale)
    if extractor is None:
        extractor = load_vgg(recipe.vgg_weights, device=dev)
    style = image_to_tensor(resize_max(style_image, recipe.style_size)).unsqueeze(0).to(dev)  # (1, 3, h, w)
    loss_fn = PerceptualLoss(
        extractor,
        style,
        LossWeights(recipe.content_weight, recipe.style_weight, recipe.tv_weight),
        recipe.content_layers,
        recipe.style_layers,
    ).to(dev)

    torch.manual_seed(recipe.seed)
    model = build_generator(config).to(dev)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    g = torch.Generator().manual_seed(recipe.seed)
    history: list[dict[str, float]] = []
    start, elapsed_before = 0, 0.0

    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    data = training_data(style_image, recipe.style_size, dataset)
    if resume:
        if ckpt is None or not ckpt.is_file():
            raise CheckpointError(f"--resume given but no checkpoint at {ckpt}")
        state = load_checkpoint(ckpt, config, recipe, data)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        g.set_state(state["rng"])
        history = list(state["history"])
        start, elapsed_before = int(state["iteration"]), float(state["elapsed_s"])
        log.info("resumed from %s at iteration %d", ckpt, start)

    def save_checkpoint(iteration: int, elapsed: float) -> None:
        if ckpt is None:
            return
        _atomic_save(
            {
                "format": CHECKPOINT_FORMAT,
                "config": config.to_dict(),
                "recipe": recipe.to_dict(),
                "iteration": iteration,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": g.get_state(),
                "history": history,
                "elapsed_s": elapsed,
                "data": data,
            },
            ckpt,
        )

    use_bf16 = training_dtype(recipe.precision, dev) == torch.bfloat16
    log.info("training in %s autocast on %s", "bf16" if use_bf16 else "fp32", dev)
    window: dict[str, float] = {"total": 0.0, "content": 0.0, "style": 0.0, "tv": 0.0}
    window_n = 0
    t0 = time.perf_counter()
    it_per_s = 0.0
    # the speed (and so the ETA) over the last RATE_WINDOW_S, not over one logging window: with
    # the API's log_every=1 that was one iteration, and one that also made a preview looked slow
    marks: deque[tuple[float, int]] = deque([(t0, start)])
    # a Ctrl-C saves what the completed iterations made (the checkpoint before it could be up to
    # checkpoint_every iterations older), with the sampler's state after the last of them
    done, rng_done = start, g.get_state()
    try:
        for it in range(start, recipe.iterations):
            if should_stop is not None and should_stop():
                raise TrainingStopped(f"training stopped at iteration {it} of {recipe.iterations}")
            batch = dataset.sample(recipe.batch_size, g).to(dev)  # (B, 3, S, S)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                output = model(batch)
                terms = loss_fn(output, batch)
            values = terms.as_dict()
            if not math.isfinite(values["total"]):  # one step on it ruins every weight: publish nothing
                terms_text = ", ".join(f"{k} {v:.3g}" for k, v in values.items() if k != "total")
                raise TrainingDiverged(
                    f"the training loss is not finite at iteration {it + 1} ({terms_text}): "
                    "lower the learning rate or the loss weights"
                )
            terms.total.backward()
            optimizer.step()
            done, rng_done = it + 1, g.get_state()
            for key, value in values.items():
                window[key] += value
            window_n += 1
            if done % recipe.log_every == 0 or done == recipe.iterations:
                now = time.perf_counter()
                marks.append((now, done))
                while len(marks) > 2 and now - marks[1][0] >= RATE_WINDOW_S:
                    marks.popleft()
                it_per_s = (done - marks[0][1]) / max(now - marks[0][0], 1e-9)
                losses = {k: v / window_n for k, v in window.items()}
                elapsed = elapsed_before + (now - t0)
                history.append({"iteration": float(done), "elapsed_s": elapsed, **losses})
                window = dict.fromkeys(window, 0.0)
                window_n = 0
                if callback is not None:
                    eta = (recipe.iterations - done) / max(it_per_s, 1e-9)
                    callback(TrainProgress(done, recipe.iterations, losses, it_per_s, eta, elapsed), model)
            if done % recipe.checkpoint_every == 0 and done < recipe.iterations:
                save_checkpoint(done, elapsed_before + (time.perf_counter() - t0))
    except KeyboardInterrupt:
        if ckpt is not None and done > start:
            g.set_state(rng_done)
            save_checkpoint(done, elapsed_before + (time.perf_counter() - t0))
            log.warning(
                "interrupted after iteration %d of %d: checkpoint saved in %s (--resume continues from it)",
                done, recipe.iterations, ckpt,
            )  # fmt: skip
        raise

    wall = elapsed_before + (time.perf_counter() - t0)
    save_checkpoint(recipe.iterations, wall)
    model.eval()
    final = {k: v for k, v in history[-1].items() if k not in ("iteration", "elapsed_s")} if history else {}
    ran = recipe.iterations - start
    return TrainResult(
        generator=model,
        config=config,
        recipe=recipe,
        history=history,
        final_losses=final,
        wall_time_s=wall,
        seconds_per_iteration=(time.perf_counter() - t0) / ran if ran else 0.0,
        resumed_from=start,
    )


@torch.no_grad()
def stylize_tensor(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run a generator on (N, 3, H, W) in [0, 1] without touching its train/eval mode."""
    param = next(iter(model.parameters()), None)
    dev = param.device if param is not None else images.device
    return model(images.to(dev)).float().clamp(0, 1).cpu()
