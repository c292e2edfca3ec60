"""The one factory for normalization layers -- the switch the paper is about.

Ulyanov et al. (arXiv:1607.08022) replace batch normalization with instance normalization in
the generator and keep it at test time. ``make_norm`` builds the layer for each variant so
both generators share exactly the same switch.
"""

from __future__ import annotations

from torch import nn

from stylenet.config import Norm


def make_norm(kind: Norm, channels: int) -> nn.Module:
    """Return a normalization layer over ``channels`` feature maps.

    * ``instance``: per-image, per-channel statistics, at training and at test time
      (``track_running_stats=False``, so ``eval()`` changes nothing).
    * ``instance-frozen``: per-image statistics while training, running averages in ``eval()``.
    * ``batch``: batch statistics while training, running averages in ``eval()``.
    """
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)
    if kind == "instance-frozen":
        return nn.InstanceNorm2d(channels, affine=True, track_running_stats=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown norm {kind!r}")
