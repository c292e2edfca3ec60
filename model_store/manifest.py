"""``manifest.json``: everything needed to load, reproduce and judge a style version."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from model_store.ids import validate_style_id

MANIFEST_FILE = "manifest.json"
#: Bump when the manifest or folder layout changes incompatibly.
MANIFEST_FORMAT_VERSION = 1


class ArtifactInfo(BaseModel):
    """The exported generator file."""

    model_config = ConfigDict(extra="forbid")

    file: str = "generator.ts"
    format: str = "torchscript"  # the format written by stylenet.export
    sha256: str = ""  # filled in by publish from the file itself
    bytes: int = 0
    weights_dtype: str = "float32"
    export_check: dict[str, float] = Field(default_factory=dict)  # eager-vs-export errors


class StyleImageInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str = "style.jpg"
    title: str = ""
    source: str = ""
    license: str = ""


class StyleManifest(BaseModel):
    """Self-description of one style version (config, recipe, losses, checksum, provenance)."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = MANIFEST_FORMAT_VERSION
    id: str
    version: int = 0  # assigned by publish
    title: str = ""
    description: str = ""
    artifact: ArtifactInfo = Field(default_factory=ArtifactInfo)
    generator: dict[str, Any]  # stylenet.config.GeneratorConfig.to_dict()
    norm: str
    recipe: dict[str, Any] = Field(default_factory=dict)
    final_losses: dict[str, float] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)  # wall time, device, photos, ...
    metrics: dict[str, Any] = Field(default_factory=dict)  # held-out evaluation
    style_image: StyleImageInfo = Field(default_factory=StyleImageInfo)
    preview: str = "preview.jpg"
    torch_version: str = ""
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        return validate_style_id(value)

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    def summary(self) -> str:
        """One line for listings: recipe, training cost, held-out style distance."""
        r, t = self.recipe, self.training
        parts: list[str] = []
        if r:
            parts.append(
                f"{r.get('iterations', '?')} it x batch {r.get('batch_size', '?')} @ {r.get('image_size', '?')} px, "
                f"style {r.get('style_size', '?')} px, style weight {r.get('style_weight', '?')}"
            )
        if t.get("wall_time_s"):
            wall = float(t["wall_time_s"])
            took = f"{wall:.0f} s" if wall < 90 else f"{wall / 60:.0f} min"
            parts.append(f"{took} on {t.get('device', '?')}")
        if "relative_style_distance" in self.metrics:
            parts.append(f"rel. style distance {float(self.metrics['relative_style_distance']):.3f}")
        return "; ".join(parts) or "no recipe recorded"
