"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from redis.exceptions import RedisError
from rq import Worker
from rq.registry import CanceledJobRegistry, FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from instyle import telemetry
from instyle.protocol import MODEL_LOAD_KEY, QUEUES
from model_store.exceptions import StoreError
from service.deps import State
from service.problems import PROBLEM_JSON, TYPE_BASE, documented

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:  # on the event loop: no thread a hung request holds can delay it
    return {"status": "ok"}


@router.get("/readyz", responses=documented(503))
def readyz(state: State) -> JSONResponse:
    checks: dict[str, dict[str, Any]] = {}
    try:
        state.redis.ping()
        checks["redis"] = {"ok": True}
    except RedisError as exc:
        checks["redis"] = {"ok": False, "detail": f"redis unreachable: {exc}"}
    for queue in QUEUES:
        if not checks["redis"]["ok"]:
            checks[f"workers:{queue}"] = {"ok": False, "detail": "unknown (redis unreachable)"}
            continue
        workers = [w for w in Worker.all(connection=state.redis) if queue in w.queue_names()]
        checks[f"workers:{queue}"] = (
            {"ok": True, "count": len(workers)}
            if workers
            else {"ok": False, "detail": f"no live worker listens to the '{queue}' queue"}
        )
    try:
        n = len(state.catalog.styles())
        checks["store"] = {"ok": True, "styles": n}
    except (OSError, StoreError) as exc:
        checks["store"] = {"ok": False, "detail": f"style store unreadable: {exc}"}
    failing = [name for name, c in checks.items() if not c["ok"]]
    if not failing:
        return JSONResponse({"status": "ready", "checks": checks})
    body = {
        "type": TYPE_BASE + "not_ready",
        "title": "Not ready",
        "status": 503,
        "detail": "; ".join(str(checks[name]["detail"]) for name in failing),
        "code": "not_ready",
        "failing": failing,
        "checks": checks,
    }
    return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(state: State) -> str:
    lines: list[str] = []
    try:
        state.metrics.flush(state.redis)  # this process's latest requests; the others' within a second
        lines += ["# HELP instyle_queue_depth Jobs waiting per queue.", "# TYPE instyle_queue_depth gauge"]
        for queue_name in QUEUES:
            queue = state.jobs.queue(queue_name)
            lines.append(f'instyle_queue_depth{{queue="{queue_name}"}} {queue.count}')
        lines += [
            "# HELP instyle_jobs Jobs by queue and RQ registry (a job canceled while it ran is in failed; "
            "instyle_job_duration_seconds_count has it as canceled).",
            "# TYPE instyle_jobs gauge",
        ]
        for queue_name in QUEUES:
            queue = state.jobs.queue(queue_name)
            for label, registry in (
                ("started", StartedJobRegistry(queue=queue)),
                ("finished", FinishedJobRegistry(queue=queue)),
                ("failed", FailedJobRegistry(queue=queue)),
                ("canceled", CanceledJobRegistry(queue=queue)),
            ):
                lines.append(f'instyle_jobs{{queue="{queue_name}",status="{label}"}} {registry.count}')
        loads = state.redis.hgetall(MODEL_LOAD_KEY)
        lines += [
            "# HELP instyle_model_load_seconds Last load time of a generator by a worker.",
            "# TYPE instyle_model_load_seconds gauge",
        ]
        for style, seconds in sorted(loads.items()):
            name = style.decode() if isinstance(style, bytes) else str(style)
            lines.append(f'instyle_model_load_seconds{{style="{name}"}} {float(seconds):.4f}')
        lines += telemetry.render(state.redis)
    except RedisError as exc:  # this process's own requests, and a line saying what is missing
        lines = [*state.metrics.render_local(), f"# redis unavailable: {exc}"]
    return "\n".join(lines) + "\n"
