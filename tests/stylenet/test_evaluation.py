from __future__ import annotations

import pytest
import torch
from torch import nn

from stylenet.evaluation import (
    contrast_sensitivity,
    contrast_sensitivity_per_photo,
    photometric,
    style_content_distances,
    style_content_per_photo,
)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Constant(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, 0.3)


def test_photometric_changes() -> None:
    x = torch.tensor([[[0.2, 0.6]]])  # one channel, mean 0.4
    torch.testing.assert_close(photometric(x, 0.5, 0.0), torch.tensor([[[0.3, 0.5]]]))
    torch.testing.assert_close(photometric(x, 1.0, 0.2), torch.tensor([[[0.4, 0.8]]]))
    torch.testing.assert_close(photometric(x, 3.0, 0.0), torch.tensor([[[0.0, 1.0]]]))  # clamped


def test_contrast_sensitivity_bounds() -> None:
    photos = [torch.full((3, 8, 8), 0.5)]
    photos[0][:, :4] = 0.3
    const = contrast_sensitivity(Constant(), photos)
    assert const["mean"] == 0.0  # output ignores the input entirely
    ident = contrast_sensitivity(Identity(), photos)
    # identity passes the change straight through: |x' - x| averaged
    assert ident["brightness_+0.2"] == pytest.approx(0.2, abs=1e-6)
    assert ident["contrast_0.5"] == pytest.approx(0.05, abs=1e-6)  # 0.1 away from the mean, halved
    assert ident["mean"] > 0


def test_style_content_distances(tiny_extractor: nn.Module) -> None:
    torch.manual_seed(0)
    photos = [torch.rand(3, 32, 32), torch.rand(3, 24, 40)]
    style = torch.rand(1, 3, 32, 32)
    ident = style_content_distances(Identity(), photos, style, tiny_extractor)
    assert ident["content_distance"] == 0.0
    assert ident["relative_style_distance"] == pytest.approx(1.0)
    # a generator that outputs the style image's mean colour moves away from the photo
    const = style_content_distances(Constant(), photos, style, tiny_extractor)
    assert const["content_distance"] > 0.1


def test_per_photo_measures_average_to_the_aggregate(tiny_extractor: nn.Module) -> None:
    torch.manual_seed(1)
    photos = [torch.rand(3, 32, 32), torch.rand(3, 24, 40) * 0.5]
    style = torch.rand(1, 3, 32, 32)
    rows = style_content_per_photo(Constant(), photos, style, tiny_extractor)
    total = style_content_distances(Constant(), photos, style, tiny_extractor)
    assert len(rows) == 2 and rows[0]["style_distance"] != rows[1]["photo_style_distance"]
    for key in ("style_distance", "photo_style_distance", "content_distance"):
        assert total[key] == pytest.approx(sum(r[key] for r in rows) / 2)
    for row in rows:
        assert row["relative_style_distance"] == pytest.approx(row["style_distance"] / row["photo_style_distance"])
    sens = contrast_sensitivity_per_photo(Identity(), photos)
    agg = contrast_sensitivity(Identity(), photos)
    assert sens[0]["contrast_0.5"] != sens[1]["contrast_0.5"]
    for key, value in agg.items():
        assert value == pytest.approx(sum(r[key] for r in sens) / 2)
