"""Held-out measures of a stylization generator (used by manifests and the BN/IN ablation).

* style distance: the layer-normalized Gram distance of the stylized photo to the style image
  (``PerceptualLoss`` style term, weight 1), also relative to that of the unstylized photo
  (lower is better; 1.0 means "no closer to the painting than the photo itself");
* content distance: the layer-normalized feature distance of the stylized photo to the photo;
* contrast sensitivity (Ulyanov et al.'s intuition for instance norm): the mean absolute pixel
  difference between the stylization of a photo whose contrast was scaled about its mean (x0.5,
  x1.5) or whose brightness was shifted (+-0.2) and the stylization of the unmodified photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

import torch
from torch import nn

from stylenet.losses import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, LossWeights, PerceptualLoss
from stylenet.vgg import FeatureExtractor

#: name -> (contrast factor, brightness shift)
PHOTOMETRIC_CHANGES: dict[str, tuple[float, float]] = {
    "contrast_0.5": (0.5, 0.0),
    "contrast_1.5": (1.5, 0.0),
    "brightness_-0.2": (1.0, -0.2),
    "brightness_+0.2": (1.0, 0.2),
}


def photometric(x: torch.Tensor, contrast: float, shift: float) -> torch.Tensor:
    """Scale contrast about each image's per-channel mean, shift brightness, clamp to [0, 1]."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - mean) * contrast + mean + shift).clamp(0, 1)


@torch.no_grad()
def _run(generator: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return generator(x).float().clamp(0, 1)


@torch.no_grad()
def contrast_sensitivity_per_photo(generator: nn.Module, photos: Sequence[torch.Tensor]) -> list[dict[str, float]]:
    """Per photo (3, H, W): mean |G(change(x)) - G(x)| per photometric change, and their mean."""
    rows = []
    for photo in photos:
        x = photo.unsqueeze(0)
        base = _run(generator, x)
        row = {
            name: float((_run(generator, photometric(x, contrast, shift)) - base).abs().mean())
            for name, (contrast, shift) in PHOTOMETRIC_CHANGES.items()
        }
        row["mean"] = fmean(row.values())
        rows.append(row)
    return rows


@torch.no_grad()
def contrast_sensitivity(generator: nn.Module, photos: Sequence[torch.Tensor]) -> dict[str, float]:
    """``contrast_sensitivity_per_photo`` averaged over the photos."""
    rows = contrast_sensitivity_per_photo(generator, photos)
    return {name: fmean(row[name] for row in rows) for name in rows[0]}


@torch.no_grad()
def style_content_per_photo(
    generator: nn.Module,
    photos: Sequence[torch.Tensor],
    style_image: torch.Tensor,
    extractor: FeatureExtractor,
    content_layers: Sequence[str] = DEFAULT_CONTENT_LAYERS,
    style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
) -> list[dict[str, float]]:
    """Per photo (3, H, W): style distance of G(x) and of x to the style image (1, 3, h, w), their
    ratio, and the content distance of G(x) to x. The style image's Grams are computed once."""
    loss = PerceptualLoss(extractor, style_image, LossWeights(1.0, 1.0, 0.0), content_layers, style_layers)
    rows = []
    for photo in photos:
        x = photo.unsqueeze(0)
        terms = loss(_run(generator, x), x)
        baseline = loss(x, x).style
        rows.append(
            {
                "style_distance": terms.style,
                "photo_style_distance": baseline,
                "relative_style_distance": terms.style / baseline if baseline > 0 else float("nan"),
                "content_distance": terms.content,
            }
        )
    return rows


@torch.no_grad()
def style_content_distances(
    generator: nn.Module,
    photos: Sequence[torch.Tensor],
    style_image: torch.Tensor,
    extractor: FeatureExtractor,
    content_layers: Sequence[str] = DEFAULT_CONTENT_LAYERS,
    style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
) -> dict[str, float]:
    """Average style/content distances over ``photos``; the relative style distance is the ratio
    of the averages (not the average of the per-photo ratios)."""
    rows = style_content_per_photo(generator, photos, style_image, extractor, content_layers, style_layers)
    style, baseline = fmean(r["style_distance"] for r in rows), fmean(r["photo_style_distance"] for r in rows)
    return {
        "style_distance": style,
        "photo_style_distance": baseline,
        "relative_style_distance": style / baseline if baseline > 0 else float("nan"),
        "content_distance": fmean(r["content_distance"] for r in rows),
    }
