"""Ulyanov et al. multi-scale ("pyramid") texture generator.

Dmitry Ulyanov, Vadim Lebedev, Andrea Vedaldi, Victor Lempitsky, *Texture Networks:
Feed-forward Synthesis of Textures and Stylized Images* (ICML 2016), with instance
normalization from Ulyanov, Vedaldi & Lempitsky (arXiv:1607.08022).

K scales, coarsest first (1/2^(K-1) of the input). Each scale sees the average-pooled image
(plus optional noise channels) through conv3x3-norm-act, conv3x3-norm-act, conv1x1-norm-act
with ``channels_per_scale`` maps. The running result is nearest-upsampled x2, normalized, and
concatenated with the next finer scale's features (so channels grow by ``channels_per_scale``
per scale), then mixed by another conv block. A final 1x1 convolution gives RGB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stylenet.config import GeneratorConfig
from stylenet.layers import PaddedConv, to_image_range, upsample_nearest2x
from stylenet.norm import make_norm

#: Negative slope of the generator's leaky ReLUs.
LEAKY_SLOPE = 0.01


def ulyanov_multiple(cfg: GeneratorConfig) -> int:
    """Sides must be divisible by 2^(K-1) so every scale has an integer size."""
    return 2 ** (cfg.scales - 1)


class ConvBlock(nn.Sequential):
    """conv3x3-norm-act, conv3x3-norm-act, conv1x1-norm-act."""

    def __init__(self, cfg: GeneratorConfig, in_ch: int, out_ch: int) -> None:
        super().__init__(
            PaddedConv(in_ch, out_ch, 3, 1, cfg.padding),
            make_norm(cfg.norm, out_ch),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            PaddedConv(out_ch, out_ch, 3, 1, cfg.padding),
            make_norm(cfg.norm, out_ch),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Conv2d(out_ch, out_ch, 1),
            make_norm(cfg.norm, out_ch),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        )


class PyramidStage(nn.Module):
    """One finer scale: its own conv block, then the join with the coarser running result."""

    def __init__(self, cfg: GeneratorConfig, coarse_ch: int, pool: int) -> None:
        super().__init__()
        per_scale = cfg.channels(cfg.channels_per_scale)
        self.pool = pool  # average-pooling factor that brings the input to this scale
        self.noise_channels = cfg.noise_channels
        self.scale_block = ConvBlock(cfg, 3 + cfg.noise_channels, per_scale)
        self.norm_coarse = make_norm(cfg.norm, coarse_ch)
        self.norm_fine = make_norm(cfg.norm, per_scale)
        self.merge = ConvBlock(cfg, coarse_ch + per_scale, coarse_ch + per_scale)

    def forward(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        x = image if self.pool == 1 else F.avg_pool2d(image, self.pool)  # (N, 3, H/p, W/p)
        if self.noise_channels > 0:
            noise = torch.rand(x.shape[0], self.noise_channels, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
            x = torch.cat([x, noise], dim=1)
        fine = self.norm_fine(self.scale_block(x))  # (N, c, H/p, W/p)
        up = self.norm_coarse(upsample_nearest2x(coarse))  # (N, C, H/p, W/p)
        return self.merge(torch.cat([up, fine], dim=1))  # (N, C + c, H/p, W/p)


class UlyanovBody(nn.Module):
    """The pyramid generator on inputs whose sides are multiples of 2^(K-1); RGB in [0, 1]."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        per_scale = cfg.channels(cfg.channels_per_scale)
        self.coarsest_pool = 2 ** (cfg.scales - 1)
        self.noise_channels = cfg.noise_channels
        self.coarsest = ConvBlock(cfg, 3 + cfg.noise_channels, per_scale)
        stages = []
        for k in range(1, cfg.scales):
            stages.append(PyramidStage(cfg, coarse_ch=per_scale * k, pool=2 ** (cfg.scales - 1 - k)))
        self.stages = nn.ModuleList(stages)
        self.to_rgb = nn.Conv2d(per_scale * cfg.scales, 3, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image if self.coarsest_pool == 1 else F.avg_pool2d(image, self.coarsest_pool)
        if self.noise_channels > 0:
            noise = torch.rand(x.shape[0], self.noise_channels, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
            x = torch.cat([x, noise], dim=1)
        y = self.coarsest(x)  # (N, c, H/2^(K-1), W/2^(K-1))
        for stage in self.stages:
            y = stage(image, y)  # channels grow by c, resolution doubles
        return to_image_range(self.to_rgb(y))  # (N, 3, H, W)
