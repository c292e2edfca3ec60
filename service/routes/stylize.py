"""POST /v1/stylize: validate an upload, queue a stylize job, optionally wait for it."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.job import Job
from rq.results import Result
from starlette.concurrency import run_in_threadpool

from instyle.protocol import JobStatus
from model_store.exceptions import ArtifactCorrupt, InvalidStyleId, StyleNotFound
from service.deps import State
from service.exceptions import InvalidField, StyleUnknown
from service.jobs import server_timing
from service.problems import RESULT_TYPES, documented, image_response, redis_unavailable
from service.routes.styles import style_unavailable
from service.uploads import inspect_upload

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["stylize"])

#: ``?wait=`` blocks on the job's results stream in slices of at most this many seconds,
#: re-reading the status between slices (a queued job canceled meanwhile has no result).
WAIT_SLICE_S = 1.0


class Accepted(BaseModel):
    job_id: str
    status: JobStatus
    status_url: str
    result_url: str


@router.post(
    "/stylize",
    status_code=202,
    response_model=Accepted,
    responses={
        **image_response("with ?wait=, the stylized image when it was ready in time", *RESULT_TYPES),
        **documented(400, 404, 413, 415, 422, 429, 503),
    },
)
async def stylize(
    request: Request,
    state: State,
    image: Annotated[UploadFile, File(description="the photo (JPEG, PNG, WebP, GIF, BMP, TIFF)")],
    style: Annotated[str, Form(description="style id, or id@version")],
    max_size: Annotated[int | None, Form(ge=16, description="long side of the output in px")] = None,
    format: Annotated[Literal["jpeg", "png", "webp"], Form()] = "jpeg",
    quality: Annotated[int, Form(ge=1, le=100)] = 90,
    preserve_color: Annotated[bool, Form()] = False,
    wait: Annotated[float, Query(ge=0, description="seconds to wait for the image (<= 30)")] = 0,
) -> Response:
    settings = state.settings
    if wait > settings.max_wait_s:
        raise InvalidField(("wait", f"at most {settings.max_wait_s:g} seconds"))
    size = settings.default_max_size if max_size is None else max_size
    if size > settings.max_size_cap:
        raise InvalidField(("max_size", f"at most {settings.max_size_cap} px on this server"))
    try:
        resolved = state.catalog.resolve(style)
    except InvalidStyleId as exc:
        raise InvalidField(("style", str(exc))) from None
    except StyleNotFound as exc:
        raise StyleUnknown(str(exc)) from None
    except ArtifactCorrupt as exc:
        raise style_unavailable(style, exc) from None
    data = await image.read()
    info = await run_in_threadpool(inspect_upload, data, settings.max_pixels)
    job = state.jobs.enqueue_stylize(
        data, resolved.manifest.ref, size, format, quality, preserve_color, info.output_pixels(size)
    )
    status_url = str(request.url_for("get_job", job_id=job.id))
    result_url = str(request.url_for("get_job_result", job_id=job.id))
    try:
        if wait > 0:
            response = await _wait_for_image(state, job, wait, status_url)
            if response is not None:
                return response
        status = state.jobs.status(job)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        log.error("redis unavailable while answering for queued job %s: %s", job.id, exc)
        # the job is queued (Redis took it): say which, so that the client polls it later
        # instead of submitting the image again
        detail = f"job {job.id} is queued, but the job queue (Redis) stopped answering; poll status_url"
        response = redis_unavailable(detail, job_id=job.id, status_url=status_url, result_url=result_url)
        response.headers["Location"] = status_url
        return response
    body_model = Accepted(job_id=job.id, status=status, status_url=status_url, result_url=result_url)
    return JSONResponse(body_model.model_dump(mode="json"), status_code=202, headers={"Location": status_url})


async def _wait_for_image(state: State, job: Job, wait: float, status_url: str) -> Response | None:
    """The result image if ``job`` succeeds within ``wait`` seconds, else ``None`` (it failed,
    was stopped or canceled, or is not done yet)."""
    deadline = time.monotonic() + wait
    after = "0-0"
    while (remaining := deadline - time.monotonic()) > 0:
        outcome = await run_in_threadpool(state.jobs.next_outcome, job, min(remaining, WAIT_SLICE_S), after)
        if outcome is None:  # a queued job canceled meanwhile never records an outcome
            if state.jobs.status(job) in (JobStatus.failed, JobStatus.canceled):
                return None
            continue
        if outcome.type == Result.Type.SUCCESSFUL:
            body, content_type, model_ms = state.jobs.stored_result(job, outcome.return_value)
            headers = {"X-Job-Id": job.id, "Location": status_url, **server_timing(model_ms)}
            return Response(body, media_type=content_type, headers=headers)
        if outcome.type != Result.Type.RETRIED:  # failed or stopped: the 202 says which
            return None
        after = outcome.id or after  # the job runs again: wait for its next outcome
    return None
