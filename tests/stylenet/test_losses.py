from __future__ import annotations

import pytest
import torch

from stylenet.losses import LossWeights, PerceptualLoss, content_loss, gram, style_loss, tv_loss


def test_gram_hand_computed() -> None:
    # one image, 2 channels, 1x2 pixels: f = [[1, 2], [3, 4]]
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    # F F^T = [[1+4, 3+8], [3+8, 9+16]] = [[5, 11], [11, 25]], divided by C*H*W = 4
    expected = torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4
    torch.testing.assert_close(gram(f), expected)


def test_content_and_style_loss_hand_computed() -> None:
    a = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    b = torch.zeros_like(a)
    assert float(content_loss(a, b)) == pytest.approx((1 + 4 + 9 + 16) / 4)
    ga, gb = gram(a), torch.zeros(1, 2, 2)
    # mean of squared Gram entries: (25 + 121 + 121 + 625) / 16 / 4 entries
    assert float(style_loss(ga, gb)) == pytest.approx((25 + 121 + 121 + 625) / 16 / 4)
    # the (1, C, C) target broadcasts over a batch of 3
    assert float(style_loss(gram(a.repeat(3, 1, 1, 1)), gb)) == pytest.approx(float(style_loss(ga, gb)))


def test_tv_loss_hand_computed() -> None:
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    # vertical diffs: (2-0), (4-1) -> mean((4 + 9) / 2) = 6.5; horizontal: (1-0), (4-2) -> (1 + 4) / 2 = 2.5
    assert float(tv_loss(x)) == pytest.approx(9.0)
    assert float(tv_loss(torch.ones(1, 3, 5, 5))) == 0.0


def test_perceptual_loss_terms_and_weights(tiny_extractor: torch.nn.Module) -> None:
    torch.manual_seed(0)
    style = torch.rand(1, 3, 40, 40)
    content = torch.rand(2, 3, 32, 32)
    loss = PerceptualLoss(tiny_extractor, style, LossWeights(content=2.0, style=3.0, tv=5.0))
    same = loss(content, content)
    assert same.content == 0.0  # output == content photo
    assert same.style > 0.0
    assert same.tv == pytest.approx(5.0 * float(tv_loss(content)), rel=1e-5)
    assert float(same.total) == pytest.approx(same.content + same.style + same.tv, rel=1e-5)
    out = torch.rand(2, 3, 32, 32, requires_grad=True)
    terms = loss(out, content)
    terms.total.backward()
    assert out.grad is not None and float(out.grad.abs().sum()) > 0
    # unweighted style term x 3 equals the reported weighted term
    unweighted = PerceptualLoss(tiny_extractor, style, LossWeights(1.0, 1.0, 0.0))(out.detach(), content)
    assert terms.style == pytest.approx(3.0 * unweighted.style, rel=1e-5)


def test_style_loss_is_zero_for_the_style_statistics(tiny_extractor: torch.nn.Module) -> None:
    style = torch.rand(1, 3, 32, 32)
    loss = PerceptualLoss(tiny_extractor, style, LossWeights(1.0, 1.0, 0.0))
    assert loss(style, style).style == pytest.approx(0.0, abs=1e-9)


def test_loss_terms_do_not_depend_on_the_feature_scale(tiny_extractor: torch.nn.Module) -> None:
    """Caffe-scale and torchvision-scale VGG features differ by a constant factor per layer;
    the normalized terms must not care (so the same weights work for either weight source)."""

    def scaled(images: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        return {k: 58.0 * v for k, v in tiny_extractor(images, layers).items()}

    torch.manual_seed(1)
    style, content, out = torch.rand(1, 3, 40, 40), torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    a = PerceptualLoss(tiny_extractor, style, LossWeights(1.0, 2.0, 0.0))(out, content)
    b = PerceptualLoss(scaled, style, LossWeights(1.0, 2.0, 0.0))(out, content)
    assert b.content == pytest.approx(a.content, rel=1e-4)
    assert b.style == pytest.approx(a.style, rel=1e-4)
