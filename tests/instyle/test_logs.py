"""Structured logs: JSON lines carry the RQ job id on every line logged while a job runs."""

from __future__ import annotations

import json
import logging

import fakeredis
import pytest
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from instyle.logs import configure

log = logging.getLogger("instyle.test")


def log_inside_a_job(word: str) -> str:
    log.warning("working on %s", word)
    return word


def test_json_lines_tag_job_lines_with_the_job_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure(logging.INFO, "json")
    log.warning("outside any job")
    redis = fakeredis.FakeRedis()
    queue = Queue("stylize", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.instyle.test_logs.log_inside_a_job", "paint")
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    outside = next(e for e in lines if e["message"] == "outside any job")
    inside = next(e for e in lines if e["message"] == "working on paint")
    assert "job_id" not in outside and outside["level"] == "warning" and outside["logger"] == "instyle.test"
    assert inside["job_id"] == job.id and inside["ts"].endswith("+00:00")


def test_text_lines_carry_the_job_id_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure(logging.INFO, "text")
    redis = fakeredis.FakeRedis()
    queue = Queue("stylize", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.instyle.test_logs.log_inside_a_job", "ink")
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    assert any(
        line.startswith(f"[job {job.id}]") and "working on ink" in line for line in capsys.readouterr().err.splitlines()
    )


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure(logging.INFO, "xml")
