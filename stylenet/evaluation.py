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
def contrast_sensitivity(generator: nn.Module, photos: Sequence[torch.Tensor]) -> dict[str, float]:
    """Mean |G(change(x)) - G(x)| per photometric change and overall; photos are (3, H, W)."""
    per_change: dict[str, list[float]] = {name: [] for name in PHOTOMETRIC_CHANGES}
    for photo in photos:
        x = photo.unsqueeze(0)
        base = _run(generator, x)
        for name, (contrast, shift) in PHOTOMETRIC_CHANGES.items():
            per_change[name].append(float((_run(generator, photometric(x, contrast, shift)) - base).abs().mean()))
    result = {name: fmean(values) for name, values in per_change.items()}
    result["mean"] = fmean(result.values())
    return result


@torch.no_grad()
def style_content_distances(
    generator: nn.Module,
    photos: Sequence[torch.Tensor],
    style_image: torch.Tensor,
    extractor: FeatureExtractor,
    content_layers: Sequence[str] = DEFAULT_CONTENT_LAYERS,
    style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
) -> dict[str, float]:
    """Average style/content distances over ``photos`` (each (3, H, W)); style image (1, 3, h, w)."""
    loss = PerceptualLoss(extractor, style_image, LossWeights(1.0, 1.0, 0.0), content_layers, style_layers)
    styled_style, photo_style, content = [], [], []
    for photo in photos:
        x = photo.unsqueeze(0)
        out = _run(generator, x)
        terms = loss(out, x)
        styled_style.append(terms.style)
        content.append(terms.content)
        photo_style.append(loss(x, x).style)
    style, baseline = fmean(styled_style), fmean(photo_style)
    return {
        "style_distance": style,
        "photo_style_distance": baseline,
        "relative_style_distance": style / baseline if baseline > 0 else float("nan"),
        "content_distance": fmean(content),
    }
