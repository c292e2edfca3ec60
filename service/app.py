"""The FastAPI application: ``create_app(settings, redis)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from redis import Redis

from model_store.shipped import open_catalog
from service import problems
from service.auth import KeyBeforeBody
from service.deps import AppState
from service.head import HeadAsGet
from service.jobs import JobService
from service.limits import BodySizeLimit
from service.metrics import ObserveRequests, RequestMetrics
from service.routes import health, jobs, styles, stylize
from service.settings import ServiceSettings

#: The web page: plain HTML/CSS/JS on the public API, served at ``/`` (files under ``/ui``).
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Swagger UI's files, vendored (``static/vendor/swagger-ui/README.md``) and served under ``/ui``.
SWAGGER_UI = "/ui/vendor/swagger-ui"
#: Seconds the API waits on Redis for a connection or one command's answer before its 503
#: ``redis_unavailable``: a Redis that stops answering (paused, partitioned) must not hold the
#: server's threads for good. Longer than any blocking read the API makes (``WAIT_SLICE_S``),
#: and than sending the largest upload to a Redis across a network (50 MB at 100 Mbit/s: 4 s).
REDIS_TIMEOUT_S = 10.0


def api_redis(url: str) -> Redis:
    """The API's own client for ``url``, with ``REDIS_TIMEOUT_S`` (RQ workers set their own, longer
    timeout on the connections they use, so the API never shares theirs)."""
    return Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)


def create_app(settings: ServiceSettings | None = None, redis: Redis | None = None) -> FastAPI:
    """Build the API. ``redis`` defaults to ``settings.redis_url``; embedded mode (``instyle
    serve`` without a URL) hands in an in-process Redis shared with its worker thread."""
    settings = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connection = redis
        if connection is None:
            if not settings.redis_url:
                raise RuntimeError("set INSTYLE_REDIS_URL, or run `instyle serve` for the embedded mode")
            connection = api_redis(settings.redis_url)
        app.state.instyle = AppState(
            settings=settings,
            redis=connection,
            catalog=open_catalog(settings.store),
            jobs=JobService(connection, settings),
            metrics=metrics,
        )
        stop_flushing = metrics.start_flushing(connection)
        yield
        stop_flushing()
        if redis is None:
            connection.close()

    metrics = RequestMetrics()
    app = FastAPI(
        title="instyle",
        version="0.1.0",
        lifespan=lifespan,
        summary="Real-time neural style transfer",
        docs_url=None,  # served below from the vendored Swagger UI: FastAPI's loads it from a CDN
        redoc_url=None,
    )
    problems.install(app)
    app.include_router(health.router)
    app.include_router(stylize.router)
    app.include_router(jobs.router)
    app.include_router(styles.router)
    app.mount("/ui", StaticFiles(directory=STATIC_DIR), name="ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """The interactive API reference, with no request leaving the machine."""
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
        )

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    # the last added is the outermost: the metrics see what the client gets, 413s included
    app.add_middleware(KeyBeforeBody, keys=settings.api_keys)
    app.add_middleware(HeadAsGet)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(ObserveRequests, metrics=metrics)
    return app
