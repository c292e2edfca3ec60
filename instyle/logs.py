"""Process logging for ``instyle serve`` / ``instyle worker``: text or JSON lines, with the id of
the RQ job being run on every line logged while it runs (torch-free)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

from rq import get_current_job

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[str, ...] = ("text", "json")


class JobIdFilter(logging.Filter):
    """Sets ``record.job_id`` to the current RQ job's id (``None`` outside a job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            try:
                job = get_current_job()
            except Exception:  # no connection or job context: not about a job
                job = None
            record.job_id = job.id if job is not None else None
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        job_id = getattr(record, "job_id", None)
        return f"[job {job_id}] {line}" if job_id else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, job_id (when in a job), exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id:
            entry["job_id"] = job_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: int = logging.INFO, fmt: str = "text") -> None:
    """Replace the root handlers with one stderr handler in ``fmt`` that tags job lines."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}; got {fmt!r}")
    handler = logging.StreamHandler()
    handler.addFilter(JobIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
