"""``build_generator``: the one place a ``GeneratorConfig`` becomes a network."""

from __future__ import annotations

from torch import nn

from stylenet.config import GeneratorConfig
from stylenet.johnson import JOHNSON_MULTIPLE, JohnsonBody
from stylenet.layers import SizeAdapter
from stylenet.ulyanov import UlyanovBody, ulyanov_multiple


def build_generator(cfg: GeneratorConfig) -> nn.Module:
    """A generator for ``cfg`` taking ``(N, 3, H, W)`` RGB in [0, 1] at any ``H x W``.

    Returns ``(N, 3, H, W)`` in [0, 1]. The network pads internally to the multiple its
    strides need and crops back, so the output always has the input's size.
    """
    if cfg.arch == "johnson":
        return SizeAdapter(JohnsonBody(cfg), JOHNSON_MULTIPLE)
    if cfg.arch == "ulyanov":
        return SizeAdapter(UlyanovBody(cfg), ulyanov_multiple(cfg))
    raise ValueError(f"unknown arch {cfg.arch!r}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
