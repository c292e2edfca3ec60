"""Perceptual losses (Gatys et al. 2016; Johnson et al. 2016) with an injected feature extractor.

* content: mean squared error between feature maps;
* style: mean squared error between Gram matrices, each normalized by the feature size C*H*W;
* total variation: mean squared difference of neighbouring pixels.

``PerceptualLoss`` divides each layer's term by the magnitude of its target (the mean squared
entry of the style's Gram matrix; the mean squared activation of the photo's features), so
every layer counts alike and the weights mean the same for any VGG weight source. Raw Caffe-scale
VGG-19 terms differ by three orders of magnitude between layers (relu4_1 carries ~87 % of the raw
style loss of a photo against The Starry Night, relu1_1 ~0.1 %), which drowns the content term.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stylenet.recipe import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
from stylenet.vgg import FeatureExtractor

__all__ = [
    "DEFAULT_CONTENT_LAYERS", "DEFAULT_STYLE_LAYERS", "LossTerms", "LossWeights", "PerceptualLoss",
    "content_loss", "gram", "style_loss", "tv_loss",
]  # fmt: skip


def gram(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C) Gram matrices normalized by C*H*W, computed in float32."""
    n, c, h, w = features.shape
    f = features.float().reshape(n, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def content_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output.float(), target.float())


def style_loss(output_gram: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """MSE between Gram matrices; ``target_gram`` of shape (1, C, C) broadcasts over the batch."""
    return F.mse_loss(output_gram, target_gram.expand_as(output_gram))


def tv_loss(images: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between vertically and horizontally adjacent pixels."""
    x = images.float()
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).mean()
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).mean()
    return dh + dw


@dataclass(frozen=True)
class LossWeights:
    content: float = 1.0
    style: float = 1.0
    tv: float = 0.0


@dataclass
class LossTerms:
    """Weighted loss terms of one batch; ``total`` keeps the graph, the floats do not."""

    total: torch.Tensor
    content: float
    style: float
    tv: float

    def as_dict(self) -> dict[str, float]:
        return {"total": float(self.total.detach()), "content": self.content, "style": self.style, "tv": self.tv}


class PerceptualLoss(nn.Module):
    """Content + style + TV loss against one style image, with an injected feature extractor.

    The stylized batch and its content batch go through the extractor in one pass.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        style_image: torch.Tensor,
        weights: LossWeights,
        content_layers: Sequence[str] = DEFAULT_CONTENT_LAYERS,
        style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
        style_layer_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if not content_layers or not style_layers:
            raise ValueError("content_layers and style_layers must not be empty")
        self.extractor = extractor
        self.weights = weights
        self.content_layers = tuple(content_layers)
        self.style_layers = tuple(style_layers)
        self.layers = tuple(dict.fromkeys(self.content_layers + self.style_layers))
        self.style_layer_weights = {name: 1.0 for name in self.style_layers}
        if style_layer_weights:
            self.style_layer_weights.update(style_layer_weights)
        with torch.no_grad():
            feats = extractor(style_image, self.style_layers)
            for name in self.style_layers:
                target = gram(feats[name]).detach()
                self.register_buffer(f"gram_{name}", target)
                self.register_buffer(f"gram_scale_{name}", target.pow(2).mean().clamp_min(1e-12))

    def _buffer(self, name: str) -> torch.Tensor:
        buf = getattr(self, name)
        assert isinstance(buf, torch.Tensor)
        return buf

    def target_gram(self, name: str) -> torch.Tensor:
        return self._buffer(f"gram_{name}")

    def forward(self, output: torch.Tensor, content: torch.Tensor) -> LossTerms:
        n = output.shape[0]
        feats = self.extractor(torch.cat([output, content], dim=0), self.layers)
        c_loss = output.new_zeros((), dtype=torch.float32)
        for name in self.content_layers:
            out_f, content_f = feats[name][:n], feats[name][n:].detach()
            scale = content_f.float().pow(2).mean().clamp_min(1e-12)
            c_loss = c_loss + content_loss(out_f, content_f) / scale
        s_loss = output.new_zeros((), dtype=torch.float32)
        for name in self.style_layers:
            raw = style_loss(gram(feats[name][:n]), self.target_gram(name))
            s_loss = s_loss + self.style_layer_weights[name] * raw / self._buffer(f"gram_scale_{name}")
        t_loss = tv_loss(output)
        c_w = self.weights.content * c_loss
        s_w = self.weights.style * s_loss
        t_w = self.weights.tv * t_loss
        total = c_w + s_w + t_w
        return LossTerms(total=total, content=float(c_w.detach()), style=float(s_w.detach()), tv=float(t_w.detach()))
