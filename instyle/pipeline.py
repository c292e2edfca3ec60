"""Train -> export -> verify -> publish: the one pipeline behind ``instyle train`` and training jobs."""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from model_store.catalog import Catalog, ResolvedStyle
from model_store.ids import validate_style_id
from model_store.manifest import ArtifactInfo, StyleImageInfo, StyleManifest
from stylenet.config import GeneratorConfig
from stylenet.data import PhotoDataset
from stylenet.evaluation import contrast_sensitivity, style_content_distances
from stylenet.exceptions import TrainingStopped
from stylenet.export import ARTIFACT_FILE, ARTIFACT_FORMAT, export_generator
from stylenet.imageio import encode_image, image_to_tensor, load_image, resize_max
from stylenet.inference import stylize_image
from stylenet.recipe import TrainRecipe
from stylenet.report import plot_losses, preview_grid, write_history
from stylenet.training import ProgressCallback, TrainResult, pick_device, train
from stylenet.vgg import load_vgg

THUMB_SIZE = 384
#: Long side (px) of the held-out photos when measuring a new style.
EVAL_SIZE = 256


@dataclass(frozen=True)
class StyleSource:
    """The style image and where it came from (recorded in the manifest)."""

    path: Path
    title: str = ""
    source: str = ""
    license: str = ""


@dataclass(frozen=True)
class PublishedStyle:
    resolved: ResolvedStyle
    result: TrainResult
    report_dir: Path


@torch.no_grad()
def evaluate_style(
    generator: torch.nn.Module, photos: Sequence[Image.Image], style: Image.Image, recipe: TrainRecipe
) -> dict[str, Any]:
    """Held-out measures for the manifest (see ``stylenet.evaluation``), on CPU in fp32."""
    model = generator.float().cpu().eval()
    tensors = [image_to_tensor(resize_max(p, EVAL_SIZE)) for p in photos]
    style_t = image_to_tensor(resize_max(style, recipe.style_size)).unsqueeze(0)
    vgg = load_vgg(recipe.vgg_weights)
    distances = style_content_distances(model, tensors, style_t, vgg, recipe.content_layers, recipe.style_layers)
    return {
        "holdout_photos": len(tensors),
        "photo_long_side": EVAL_SIZE,
        "vgg": vgg.source,
        **{k: round(v, 5) for k, v in distances.items()},
        "contrast_sensitivity": {k: round(v, 5) for k, v in contrast_sensitivity(model, tensors).items()},
    }


def write_report(result: TrainResult, style: Image.Image, photos: Sequence[Image.Image], out: Path, title: str) -> None:
    """history.json, loss_curve.png and preview_grid.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_history(result.history, out / "history.json")
    if result.history:
        plot_losses(result.history, out / "loss_curve.png", title=title)
    preview_grid(result.generator, photos, style).save(out / "preview_grid.png")


def _stop_if_asked(should_stop: Callable[[], bool] | None, when: str) -> None:
    if should_stop is not None and should_stop():
        raise TrainingStopped(f"training stopped {when}; nothing was published")


def train_and_publish(
    *,
    photos: str | Path,
    style: StyleSource,
    name: str,
    catalog: Catalog,
    config: GeneratorConfig,
    recipe: TrainRecipe,
    preview_photos: Sequence[Path],
    device: str | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    callback: ProgressCallback | None = None,
    report_dir: Path | None = None,
    half: bool = False,
    should_stop: Callable[[], bool] | None = None,
    replace: bool = True,
) -> PublishedStyle:
    """Train a style, export it (checked against eager output), and publish it atomically; with
    ``replace=False`` only as the style's first version (``StyleExists`` if one was published
    meanwhile; the checkpoint of the finished training stays, so a resume publishes it)."""
    validate_style_id(name)
    style_img = load_image(style.path)
    dataset = PhotoDataset(photos, recipe.image_size, recipe.crop_scale)
    dev = pick_device(device)
    ckpt = (checkpoint_dir / "checkpoint.pt") if checkpoint_dir is not None else None
    result = train(
        dataset, style_img, config, recipe, device=dev, checkpoint_path=ckpt, resume=resume, callback=callback,
        should_stop=should_stop,
    )  # fmt: skip
    _stop_if_asked(should_stop, "after training")
    previews = [load_image(p) for p in preview_photos]
    report = report_dir or (checkpoint_dir if checkpoint_dir is not None else Path(tempfile.mkdtemp(prefix="instyle-")))
    write_report(result, style_img, previews, report, title=f"{name}: {config.arch}/{config.norm}")

    with tempfile.TemporaryDirectory(prefix="instyle-export-") as tmp:
        artifact = Path(tmp) / ARTIFACT_FILE
        check = export_generator(result.generator, artifact, half=half)
        cpu_model = result.generator.float().cpu().eval()
        metrics = evaluate_style(cpu_model, previews, style_img, recipe) if previews else {}
        files: dict[str, bytes | Path] = {
            ARTIFACT_FILE: artifact,
            "style.jpg": encode_image(resize_max(style_img, THUMB_SIZE), "jpeg", 88),
            "history.json": report / "history.json",
            "preview_grid.png": report / "preview_grid.png",
        }
        if (report / "loss_curve.png").is_file():
            files["loss_curve.png"] = report / "loss_curve.png"
        if previews:
            files["preview.jpg"] = encode_image(stylize_image(cpu_model, previews[0], THUMB_SIZE), "jpeg", 88)
        manifest = StyleManifest(
            id=name,
            title=style.title or name,
            artifact=ArtifactInfo(
                file=ARTIFACT_FILE,
                format=ARTIFACT_FORMAT,
                weights_dtype=str(check["weights_dtype"]),
                export_check={"max_abs_diff": float(check["max_abs_diff"]), "psnr_db": float(check["psnr_db"])},
            ),
            generator=config.to_dict(),
            norm=config.norm,
            recipe=recipe.to_dict(),
            final_losses=result.final_losses,
            metrics=metrics,
            training={
                "iterations": recipe.iterations,
                "wall_time_s": round(result.wall_time_s, 1),
                "seconds_per_iteration": round(result.seconds_per_iteration, 4),
                "resumed_from": result.resumed_from,
                "device": str(dev),
                "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
                "photos": len(dataset),
                "photos_dir": Path(photos).name,
            },
            style_image=StyleImageInfo(file="style.jpg", title=style.title, source=style.source, license=style.license),
            preview="preview.jpg" if previews else "",
            torch_version=torch.__version__,
        )
        # the last chance to honour a cancel: export and evaluation take seconds to minutes
        _stop_if_asked(should_stop, "before publishing")
        resolved = catalog.publish(manifest, files, replace=replace)
    return PublishedStyle(resolved=resolved, result=result, report_dir=report)
