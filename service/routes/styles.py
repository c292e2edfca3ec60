"""GET /v1/styles, /v1/styles/{id}, /v1/styles/{id}/preview."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel

from model_store.catalog import ResolvedStyle
from model_store.exceptions import ArtifactCorrupt, InvalidStyleId, StyleNotFound
from service.deps import State
from service.exceptions import StyleUnknown

router = APIRouter(prefix="/v1/styles", tags=["styles"])


class StyleSummaryOut(BaseModel):
    id: str
    version: int
    versions: list[int]
    title: str
    shipped: bool
    arch: str
    norm: str
    preview_url: str


class StyleDetail(StyleSummaryOut):
    recipe: dict[str, Any]
    final_losses: dict[str, float]
    training: dict[str, Any]
    metrics: dict[str, Any]
    style_image: dict[str, Any]
    created_at: str
    artifact: dict[str, Any]


def _summary(resolved: ResolvedStyle, versions: list[int]) -> dict[str, Any]:
    m = resolved.manifest
    return {
        "id": m.id,
        "version": m.version,
        "versions": versions,
        "title": m.title or m.id,
        "shipped": resolved.read_only,
        "arch": str(m.generator.get("arch", "")),
        "norm": m.norm,
        "preview_url": f"/v1/styles/{m.id}/preview",
    }


def _resolve(state: State, style_ref: str) -> ResolvedStyle:
    try:
        return state.catalog.resolve(style_ref)
    except (InvalidStyleId, StyleNotFound, ArtifactCorrupt) as exc:
        raise StyleUnknown(str(exc)) from None


@router.get("", response_model=list[StyleSummaryOut])
def list_styles(state: State) -> list[dict[str, Any]]:
    return [_summary(s.latest, list(s.versions)) for s in state.catalog.styles()]


@router.get("/{style_ref}", response_model=StyleDetail)
def get_style(style_ref: str, state: State) -> dict[str, Any]:
    resolved = _resolve(state, style_ref)
    m = resolved.manifest
    return {
        **_summary(resolved, state.catalog.versions(m.id)),
        "recipe": m.recipe,
        "final_losses": m.final_losses,
        "training": m.training,
        "metrics": m.metrics,
        "style_image": m.style_image.model_dump(),
        "created_at": m.created_at.isoformat(),
        "artifact": m.artifact.model_dump(),
    }


@router.get("/{style_ref}/preview", response_class=FileResponse)
def get_preview(style_ref: str, state: State, kind: str = "preview") -> FileResponse:
    resolved = _resolve(state, style_ref)
    name = resolved.manifest.style_image.file if kind == "style" else resolved.manifest.preview
    path = resolved.file(name) if name else None
    if path is None or not path.is_file():
        raise StyleUnknown(f"style {resolved.manifest.ref} has no {kind} image")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=300"})
