"""Training artifacts people look at: loss history (JSON), loss curves (PNG), preview grid (PNG)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import nn

from stylenet.imageio import image_to_tensor, resize_max, tensor_to_image

#: Loss curves of at most this many points mark each point (``plot_losses``).
MARKED_POINTS = 50


def write_history(history: Sequence[dict[str, float]], path: Path) -> None:
    path.write_text(json.dumps(list(history), indent=1))


def plot_losses(history: Sequence[dict[str, float]], path: Path, title: str = "training loss") -> None:
    """Weighted loss terms against iterations, log scale, one line per term; with few points
    (a short run logs one) each point is marked too, since a line needs two to show."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    its = [h["iteration"] for h in history]
    marker = "o" if len(history) <= MARKED_POINTS else None
    for key in ("total", "content", "style", "tv"):
        values = [h[key] for h in history]
        if any(v > 0 for v in values):
            ax.plot(its, values, label=key, marker=marker, markersize=4)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("weighted loss")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fit_cell(img: Image.Image, cell: int) -> Image.Image:
    """``img`` scaled into a white ``cell`` x ``cell`` square, centred (grids of mixed aspect ratios)."""
    img = resize_max(img, cell)
    canvas = Image.new("RGB", (cell, cell), (255, 255, 255))
    canvas.paste(img, ((cell - img.width) // 2, (cell - img.height) // 2))
    return canvas


@torch.no_grad()
def preview_grid(
    model: nn.Module,
    photos: Sequence[Image.Image],
    style: Image.Image | None = None,
    cell: int = 256,
) -> Image.Image:
    """Top row: the photos (and the style image first); bottom row: the same photos stylized.

    The model is run in eval mode on each photo at ``cell`` px long side; its mode is restored.
    """
    was_training = model.training
    model.eval()
    try:
        param = next(iter(model.parameters()), None)
        dev = param.device if param is not None else torch.device("cpu")
        columns = []
        for photo in photos:
            small = resize_max(photo, cell)
            out = model(image_to_tensor(small).unsqueeze(0).to(dev)).float().clamp(0, 1).cpu()
            columns.append((small, tensor_to_image(out)))
    finally:
        model.train(was_training)
    pad = 4
    label_h = 18
    n_cols = len(columns) + (1 if style is not None else 0)
    grid = Image.new("RGB", (n_cols * (cell + pad) + pad, 2 * (cell + pad) + pad + label_h), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    col = 0
    if style is not None:
        grid.paste(fit_cell(style, cell), (pad, pad + label_h))
        draw.text((pad, 3), "style", fill=(0, 0, 0))
        col = 1
    for i, (photo, styled) in enumerate(columns):
        x = pad + (col + i) * (cell + pad)
        if i == 0:
            draw.text((x, 3), "photo (top) / stylized (bottom)", fill=(0, 0, 0))
        grid.paste(fit_cell(photo, cell), (x, pad + label_h))
        grid.paste(fit_cell(styled, cell), (x, 2 * pad + cell + label_h))
    return grid
