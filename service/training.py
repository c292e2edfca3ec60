"""Training requests: presets, explicit recipe fields, range validation (torch-free).

The ranges mirror ``stylenet.recipe.TrainRecipe`` and ``stylenet.config.GeneratorConfig``, which
check them again on the worker; here they give a 422 naming the field before anything queues.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Preset = Literal["fast", "quality"]

#: ``fast``: a CPU-friendly style in minutes (narrower net, small crops); ``quality``: the full
#: recipe (Johnson generator at full width, 256 px crops, 4000 iterations of 4 photos).
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"width": 0.5, "iterations": 300, "image_size": 128, "style_size": 256, "batch_size": 2},
    "quality": {"width": 1.0, "iterations": 4000, "image_size": 256, "style_size": 512, "batch_size": 4},
}


#: The style image's short side once fitted to ``style_size`` (``UploadInfo.fitted``), at least:
#: ``stylenet.recipe.MIN_STYLE_SIDE``, which the worker checks again (this module stays torch-free).
MIN_STYLE_SIDE = 32


class TrainRequest(BaseModel):
    """Recipe fields of ``POST /v1/styles``; unset fields come from the preset, then defaults."""

    model_config = ConfigDict(allow_inf_nan=False)  # "nan" is "not a finite number", not "<= 2"

    preset: Preset | None = None
    arch: Literal["johnson", "ulyanov"] | None = None
    norm: Literal["instance", "batch", "instance-frozen"] | None = None
    width: float | None = Field(default=None, gt=0, le=2)
    iterations: int | None = Field(default=None, ge=1, le=200_000)
    image_size: int | None = Field(default=None, ge=32, le=1024)
    style_size: int | None = Field(default=None, ge=32, le=2048)
    batch_size: int | None = Field(default=None, ge=1, le=32)
    lr: float | None = Field(default=None, gt=0, le=0.1)
    content_weight: float | None = Field(default=None, ge=0, le=1e6)
    style_weight: float | None = Field(default=None, ge=0, le=1e6)
    tv_weight: float | None = Field(default=None, ge=0, le=1e6)

    def resolve(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(generator fields, recipe fields) with the preset applied under explicit values."""
        merged: dict[str, Any] = dict(PRESETS[self.preset or "fast"])
        merged.update({k: v for k, v in self.model_dump(exclude={"preset"}).items() if v is not None})
        generator: dict[str, Any] = {k: merged.pop(k) for k in ("arch", "norm", "width") if k in merged}
        checkpoint_every = max(10, min(200, merged.get("iterations", 300) // 20))
        # progress every iteration (the job throttles what it writes), so the API stays fresh
        recipe = {**merged, "checkpoint_every": checkpoint_every, "log_every": 1}
        return generator, recipe
