"""GET/DELETE /v1/jobs/{id} and the result image."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from rq.job import Job

from service.deps import State
from service.jobs import JobView, server_timing
from service.problems import RESULT_TYPES, documented, image_response

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobView, name="get_job", responses=documented(404, 410, 503))
def get_job(job_id: str, request: Request, state: State) -> JobView:
    return _view(state.jobs.fetch(job_id), request, state)


def _view(job: Job, request: Request, state: State) -> JobView:
    return state.jobs.view(
        job,
        str(request.url_for("get_job_result", job_id=job.id)),
        str(request.url_for("get_job_preview", job_id=job.id)),
    )


@router.get(
    "/{job_id}/preview",
    name="get_job_preview",
    response_class=Response,
    responses={**image_response("the training's latest preview", "image/jpeg"), **documented(404, 410, 503)},
)
def get_job_preview(job_id: str, state: State) -> Response:
    """A stylized sample from the current weights of a training job (refreshed periodically)."""
    data = state.jobs.preview(state.jobs.fetch(job_id))
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get(
    "/{job_id}/result",
    name="get_job_result",
    response_class=Response,
    responses={**image_response("the stylized image", *RESULT_TYPES), **documented(404, 409, 410, 503)},
)
def get_job_result(job_id: str, state: State) -> Response:
    data, content_type, model_ms = state.jobs.result(state.jobs.fetch(job_id))
    headers = {"Cache-Control": "private, max-age=3600", **server_timing(model_ms)}
    return Response(data, media_type=content_type, headers=headers)


@router.delete("/{job_id}", response_model=JobView, responses=documented(404, 409, 410, 503))
def cancel_job(job_id: str, request: Request, state: State) -> JobView:
    job = state.jobs.fetch(job_id)
    state.jobs.cancel(job)
    return _view(job, request, state)  # as GET shows it: a running training job's preview is still there
