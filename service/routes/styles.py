"""GET /v1/styles, /v1/styles/{id}, /v1/styles/{id}/preview."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from instyle.protocol import JobStatus
from model_store.catalog import ResolvedStyle
from model_store.exceptions import ArtifactCorrupt, InvalidStyleId, StyleNotFound, StyleReadOnly
from model_store.ids import parse_style_ref, validate_style_id
from service.auth import ApiKey
from service.deps import State
from service.exceptions import InvalidField, StyleExists, StyleReadOnlyError, StyleUnavailable, StyleUnknown
from service.problems import documented, image_response
from service.training import MIN_STYLE_SIDE, TrainRequest
from service.uploads import inspect_upload

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/styles", tags=["styles"])


class StyleSummaryOut(BaseModel):
    id: str
    version: int
    versions: list[int]
    title: str
    shipped: bool
    arch: str
    norm: str
    summary: str
    preview_url: str
    style_url: str


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
        "summary": m.summary(),
        "preview_url": f"/v1/styles/{m.ref}/preview",
        "style_url": f"/v1/styles/{m.ref}/preview?kind=style",
    }


def _resolve(state: State, style_ref: str) -> ResolvedStyle:
    try:
        return state.catalog.resolve(style_ref)
    except (InvalidStyleId, StyleNotFound) as exc:
        raise StyleUnknown(str(exc)) from None
    except ArtifactCorrupt as exc:
        raise style_unavailable(style_ref, exc) from None


def style_unavailable(style_ref: str, error: ArtifactCorrupt) -> StyleUnavailable:
    """A damaged style's problem: the server's paths and parser errors go to the log, not to
    the client."""
    log.error("style %s cannot be read: %s", style_ref, error)
    return StyleUnavailable(f"style {style_ref} cannot be read on this server (its files are damaged)")


@router.get("", response_model=list[StyleSummaryOut])
def list_styles(state: State) -> list[dict[str, Any]]:
    return [_summary(s.latest, list(s.versions)) for s in state.catalog.styles()]


@router.get("/{style_ref}", response_model=StyleDetail, responses=documented(404, 503))
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


@router.get(
    "/{style_ref}/preview",
    response_class=FileResponse,
    responses={
        **image_response("the style's preview, or (kind=style) its painting", "image/jpeg"),
        **documented(404, 503),
    },
)
def get_preview(style_ref: str, state: State, kind: Literal["preview", "style"] = "preview") -> FileResponse:
    resolved = _resolve(state, style_ref)
    name = resolved.manifest.style_image.file if kind == "style" else resolved.manifest.preview
    path = resolved.file(name) if name else None
    if path is None or not path.is_file():
        raise StyleUnknown(f"style {resolved.manifest.ref} has no {kind} image")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=300"})


class TrainAccepted(BaseModel):
    job_id: str
    status: JobStatus
    status_url: str
    style: str
    generator: dict[str, Any]
    recipe: dict[str, Any]


def _limits(field: str) -> dict[str, Any]:
    """``TrainRequest``'s bounds on ``field``, for the schema of the form field that feeds it
    (the model checks them: one place holds them)."""
    keys = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}
    return {
        key: getattr(rule, attr)
        for rule in TrainRequest.model_fields[field].metadata
        for attr, key in keys.items()
        if getattr(rule, attr, None) is not None
    }


@router.post(
    "", status_code=202, response_model=TrainAccepted, responses=documented(400, 401, 403, 409, 413, 415, 422, 429, 503)
)
async def train_style(
    request: Request,
    state: State,
    _auth: ApiKey,
    style_image: Annotated[UploadFile, File(description="the painting")],
    name: Annotated[str, Form(description="style id (slug)")],
    title: Annotated[str, Form(max_length=200)] = "",
    preset: Annotated[Literal["fast", "quality"] | None, Form()] = None,
    arch: Annotated[Literal["johnson", "ulyanov"] | None, Form()] = None,
    norm: Annotated[Literal["instance", "batch", "instance-frozen"] | None, Form()] = None,
    width: Annotated[float | None, Form(json_schema_extra=_limits("width"))] = None,
    iterations: Annotated[int | None, Form(json_schema_extra=_limits("iterations"))] = None,
    image_size: Annotated[int | None, Form(json_schema_extra=_limits("image_size"))] = None,
    style_size: Annotated[int | None, Form(json_schema_extra=_limits("style_size"))] = None,
    batch_size: Annotated[int | None, Form(json_schema_extra=_limits("batch_size"))] = None,
    lr: Annotated[float | None, Form(json_schema_extra=_limits("lr"))] = None,
    content_weight: Annotated[float | None, Form(json_schema_extra=_limits("content_weight"))] = None,
    style_weight: Annotated[float | None, Form(json_schema_extra=_limits("style_weight"))] = None,
    tv_weight: Annotated[float | None, Form(json_schema_extra=_limits("tv_weight"))] = None,
    replace: Annotated[bool, Form()] = False,
) -> JSONResponse:
    try:
        validate_style_id(name)
    except InvalidStyleId as exc:
        raise InvalidField(("name", str(exc))) from None
    try:
        req = TrainRequest(
            preset=preset, arch=arch, norm=norm, width=width, iterations=iterations, image_size=image_size,
            style_size=style_size, batch_size=batch_size, lr=lr, content_weight=content_weight,
            style_weight=style_weight, tv_weight=tv_weight,
        )  # fmt: skip
    except ValidationError as exc:
        raise InvalidField(*((".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors())) from None
    if state.catalog.versions(name) and not replace:
        raise StyleExists(f"style {name!r} exists; send replace=true to publish a new version")
    data = await style_image.read()
    info = await run_in_threadpool(inspect_upload, data, state.settings.max_pixels)
    generator, recipe = req.resolve()
    if (short := min(info.fitted(recipe["style_size"]))) < MIN_STYLE_SIDE:
        raise InvalidField(
            (
                "style_image",
                f"{info.width}x{info.height} px, whose short side is {short} px once fitted to style_size "
                f"{recipe['style_size']}; at least {MIN_STYLE_SIDE} px are needed",
            )
        )
    job = state.jobs.enqueue_train(data, name, title, generator, recipe, replace=replace)
    status_url = str(request.url_for("get_job", job_id=job.id))
    body = TrainAccepted(
        job_id=job.id, status=JobStatus.queued, status_url=status_url, style=name, generator=generator, recipe=recipe
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=202, headers={"Location": status_url})


@router.delete("/{style_ref}", status_code=204, responses=documented(401, 403, 404, 409))
def delete_style(style_ref: str, state: State, _auth: ApiKey) -> Response:
    try:
        style_id, version = parse_style_ref(style_ref)  # "id@abc" is refused, never read as "all versions"
        state.catalog.delete(style_id, version)
    except (InvalidStyleId, StyleNotFound) as exc:
        raise StyleUnknown(str(exc)) from None
    except StyleReadOnly as exc:
        raise StyleReadOnlyError(str(exc)) from None
    return Response(status_code=204)
