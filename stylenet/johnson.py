"""Johnson et al. residual generator.

Justin Johnson, Alexandre Alahi, Li Fei-Fei, *Perceptual Losses for Real-Time Style Transfer
and Super-Resolution* (ECCV 2016), with the normalization switch of Ulyanov, Vedaldi &
Lempitsky, *Instance Normalization: The Missing Ingredient for Fast Stylization*
(arXiv:1607.08022). Layout: c9s1-32, d64, d128, R128 x 5, u64, u32, c9s1-3.
"""

from __future__ import annotations

import torch
from torch import nn

from stylenet.config import GeneratorConfig
from stylenet.layers import PaddedConv, to_image_range, upsample_nearest2x
from stylenet.norm import make_norm

#: The body halves the resolution twice, so sides must be multiples of 4.
JOHNSON_MULTIPLE = 4


class ConvNormReLU(nn.Sequential):
    def __init__(self, cfg: GeneratorConfig, in_ch: int, out_ch: int, kernel: int, stride: int = 1):
        super().__init__(
            PaddedConv(in_ch, out_ch, kernel, stride, cfg.padding),
            make_norm(cfg.norm, out_ch),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """x + norm(conv(relu(norm(conv(x))))) -- no ReLU after the sum (Gross & Wilber)."""

    def __init__(self, cfg: GeneratorConfig, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvNormReLU(cfg, channels, channels, 3),
            PaddedConv(channels, channels, 3, 1, cfg.padding),
            make_norm(cfg.norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Upsample2x(nn.Module):
    """x2 upsampling: nearest-neighbour then a 3x3 convolution (no checkerboard artefacts)."""

    def __init__(self, cfg: GeneratorConfig, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = PaddedConv(in_ch, out_ch, 3, 1, cfg.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(upsample_nearest2x(x))


def _up_stage(cfg: GeneratorConfig, in_ch: int, out_ch: int) -> nn.Sequential:
    up: nn.Module
    if cfg.upsample == "deconv":
        up = nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1)
    else:
        up = Upsample2x(cfg, in_ch, out_ch)
    return nn.Sequential(up, make_norm(cfg.norm, out_ch), nn.ReLU(inplace=True))


class JohnsonBody(nn.Module):
    """The residual generator on inputs whose sides are multiples of 4; RGB in [0, 1] in and out."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        c32, c64, c128 = cfg.channels(32), cfg.channels(64), cfg.channels(128)
        self.encoder = nn.Sequential(
            ConvNormReLU(cfg, 3, c32, 9),  # (N, c32, H, W)
            ConvNormReLU(cfg, c32, c64, 3, stride=2),  # (N, c64, H/2, W/2)
            ConvNormReLU(cfg, c64, c128, 3, stride=2),  # (N, c128, H/4, W/4)
        )
        self.residuals = nn.Sequential(*[ResidualBlock(cfg, c128) for _ in range(cfg.residual_blocks)])
        self.decoder = nn.Sequential(
            _up_stage(cfg, c128, c64),  # (N, c64, H/2, W/2)
            _up_stage(cfg, c64, c32),  # (N, c32, H, W)
            PaddedConv(c32, 3, 9, 1, cfg.padding),  # (N, 3, H, W)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_image_range(self.decoder(self.residuals(self.encoder(x))))
