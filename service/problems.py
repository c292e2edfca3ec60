"""RFC 9457 problem+json for every 4xx/5xx, each with a stable ``code``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Route

from service.exceptions import InvalidField, QueueFull, ServiceError, Unauthorized

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "/problems/"  # relative URI references (RFC 9457 section 3.1.1)


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every 4xx and 5xx (``application/problem+json``)."""

    type: str = Field(description="a relative URI naming the problem: /problems/<code>")
    title: str
    status: int
    detail: str = Field(description="what went wrong with this request, for people")
    code: str = Field(description="stable machine-readable reason, e.g. style_not_found, queue_full")
    errors: list[FieldError] | None = Field(default=None, description="422 only: each refused field")
    job_id: str | None = Field(default=None, description="a job the request did queue before it failed (poll it)")
    status_url: str | None = Field(default=None, description="where that job's status is, with job_id")
    result_url: str | None = Field(default=None, description="where that job's result will be, with job_id")


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=``: the problem statuses it answers, each documented in the OpenAPI
    schema as a ``Problem`` in ``application/problem+json`` (``problem_openapi``)."""
    return {status: {"description": HTTPStatus(status).phrase} for status in statuses}


def image_response(description: str, *media_types: str) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=`` entry for a 200 that is an image in one of ``media_types`` (the
    route sets ``response_class=Response``, so that FastAPI documents no JSON besides)."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {200: {"description": description, "content": {t: binary for t in media_types}}}


#: The formats a stylized image comes in (``format=``).
RESULT_TYPES = ("image/jpeg", "image/png", "image/webp")


def problem_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's OpenAPI schema with what the API really sends on errors: every 4xx/5xx of every
    operation is a ``Problem`` in ``application/problem+json`` (FastAPI documents its 422 as
    ``HTTPValidationError`` in JSON), and every operation may answer 500."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(problem_schema.pop("$defs", {}))
        components["Problem"] = problem_schema
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.setdefault("500", {"description": HTTPStatus(500).phrase})
                for status, response in responses.items():
                    if status[0] in "45":
                        response["content"] = content
        app.openapi_schema = schema
    return app.openapi_schema


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": TYPE_BASE + code, "title": title, "status": status, "detail": detail, "code": code, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


#: ``Retry-After`` of a 503 while Redis does not answer.
REDIS_RETRY_AFTER_S = 5


def redis_unavailable(detail: str, **extra: Any) -> JSONResponse:
    """The 503 for a Redis that does not answer, with a ``Retry-After``."""
    response = problem(503, "redis_unavailable", "Service unavailable", detail, **extra)
    response.headers["Retry-After"] = str(REDIS_RETRY_AFTER_S)
    return response


_HTTP_CODES = {
    400: "bad_request",  # e.g. a multipart body that does not parse
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "upload_too_large",
}


#: The order ``Allow`` lists methods in.
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> str:
    """Every method some route of ``request``'s path answers, HEAD wherever GET is
    (``service.head``), for a 405's ``Allow`` (RFC 9110 section 10.2.1)."""
    methods: set[str] = set()
    for route in leaf_routes(request.app.router.routes):
        if isinstance(route, Route | APIRoute) and route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")
    rank = {m: i for i, m in enumerate(_METHOD_ORDER)}
    return ", ".join(sorted(methods, key=lambda m: (rank.get(m, len(rank)), m)))


def leaf_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """The routes below included routers (FastAPI keeps each ``include_router`` as one entry
    holding its router; their routes carry the whole path)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from leaf_routes(inner.routes)
        else:
            yield route


def service_error_response(exc: ServiceError) -> JSONResponse:
    """The problem response for one of our own errors, with the headers its status calls for."""
    extra = {"errors": exc.errors} if isinstance(exc, InvalidField) else {}
    response = problem(exc.status, exc.code, exc.title, exc.detail, **extra)
    if isinstance(exc, QueueFull):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, Unauthorized):  # RFC 9110 section 11.6.1: a 401 names its scheme
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def install(app: FastAPI) -> None:
    app.openapi = lambda: problem_openapi(app)  # type: ignore[method-assign]

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in err.get("loc", ())[1:]) or "body", "message": err.get("msg", "")}
            for err in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, InvalidField.code, InvalidField.title, detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        try:
            title = HTTPStatus(exc.status_code).phrase
        except ValueError:
            title = str(exc.detail)
        response = problem(exc.status_code, code, title, str(exc.detail))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:  # starlette's Allow names the first route of the path only
            response.headers["Allow"] = allowed_methods(request)
        return response

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("redis unavailable on %s %s: %s", request.method, request.url.path, exc)
        return redis_unavailable("the job queue (Redis) cannot be reached")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal", "Internal error", "the server failed to handle the request")
