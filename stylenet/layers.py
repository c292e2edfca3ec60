"""Building blocks shared by both generators: padded convolutions, output mapping, size padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stylenet.config import Padding


def make_pad(kind: Padding, amount: int) -> nn.Module:
    """Spatial padding layer of the configured kind (applied before an unpadded convolution)."""
    if kind == "reflect":
        return nn.ReflectionPad2d(amount)
    if kind == "replicate":
        return nn.ReplicationPad2d(amount)
    if kind == "zero":
        return nn.ZeroPad2d(amount)
    raise ValueError(f"unknown padding {kind!r}")


class PaddedConv(nn.Sequential):
    """``pad(k // 2)`` then ``Conv2d(k, stride)``: keeps ``H/stride x W/stride`` for any padding kind."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: Padding = "reflect") -> None:
        super().__init__(
            make_pad(padding, kernel // 2),
            nn.Conv2d(in_ch, out_ch, kernel_size=kernel, stride=stride),
        )


def to_image_range(x: torch.Tensor) -> torch.Tensor:
    """Map unbounded activations to RGB in [0, 1] (Johnson et al.'s scaled tanh)."""
    return 0.5 * (torch.tanh(x) + 1.0)


class SizeAdapter(nn.Module):
    """Wraps a fully convolutional body that needs sides divisible by ``multiple``.

    Any ``H x W`` works: the input is replicate-padded on the bottom/right up to a multiple of
    ``multiple`` (and at least ``2 * multiple``, so the coarsest feature map keeps more than one
    pixel for instance statistics), run through ``body``, and cropped back to ``H x W``.
    """

    def __init__(self, body: nn.Module, multiple: int) -> None:
        super().__init__()
        self.body = body
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        m = self.multiple
        ph = max(-h % m, 2 * m - h)
        pw = max(-w % m, 2 * m - w)
        if ph > 0 or pw > 0:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        y = self.body(x)  # (N, 3, H + ph, W + pw)
        return y[:, :, :h, :w]


def upsample_nearest2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 upsampling, equal to ``F.interpolate(x, scale_factor=2.0)``.

    It calls the ATen operator directly: scripting ``F.interpolate`` would copy torch's whole
    Python ``interpolate`` (every mode's branch) into the exported artifact, and an artifact
    written by one torch release then fails to load on an older one that lacks an operator a
    newer branch names. The operator itself has been stable across releases.
    """
    return torch._C._nn.upsample_nearest2d(x, [x.shape[-2] * 2, x.shape[-1] * 2], None)
