"""Shared fixtures: tiny photos, a tiny stand-in for VGG, paths of bundled assets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
ASSET_PHOTOS = REPO / "instyle" / "assets" / "photos"
ASSET_STYLE = REPO / "instyle" / "assets" / "styles" / "starry_night.jpg"


class TinyFeatures(nn.Module):
    """A stand-in feature extractor with VGG's default layer names, random frozen weights."""

    names = ("relu1_1", "relu2_1", "relu2_2", "relu3_1", "relu4_1")

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        chans = [3, 8, 8, 8, 16, 16]
        strides = [1, 2, 1, 2, 2]
        self.convs = nn.ModuleList()
        for i, stride in enumerate(strides):
            conv = nn.Conv2d(chans[i], chans[i + 1], 3, stride=stride, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3)
                conv.bias.zero_()
            self.convs.append(conv)
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        x = images
        for name, conv in zip(self.names, self.convs, strict=True):
            x = torch.relu(conv(x))
            if name in layers:
                out[name] = x
        return out


@pytest.fixture
def tiny_extractor() -> TinyFeatures:
    return TinyFeatures()


@pytest.fixture(scope="session")
def small_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled photos downscaled to 96 px (fast to decode and crop)."""
    folder = tmp_path_factory.mktemp("photos")
    for path in sorted(ASSET_PHOTOS.glob("*.jpg")):
        img = Image.open(path).convert("RGB")
        img.thumbnail((96, 96))
        img.save(folder / path.name, quality=90)
    return folder


@pytest.fixture(scope="session")
def style_image() -> Image.Image:
    img = Image.open(ASSET_STYLE).convert("RGB")
    img.thumbnail((64, 64))
    return img
