"""Worker metrics through Redis: cumulative histograms, counters, bounded labels, never failing."""

from __future__ import annotations

import fakeredis
import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from instyle import telemetry


def test_histograms_and_counters_render_as_prometheus_text() -> None:
    redis = fakeredis.FakeRedis()
    for seconds in (0.02, 0.3, 0.3, 40.0):
        telemetry.observe(redis, "instyle_job_duration_seconds", {"type": "stylize", "status": "finished"}, seconds)
    telemetry.incr(redis, "instyle_model_cache_total", {"result": "miss"})
    telemetry.incr(redis, "instyle_model_cache_total", {"result": "miss"})
    stale = 'status="finished",type="stylize"|0.5'  # the earlier cumulative layout: ignored
    redis.hset(telemetry.PREFIX + "instyle_job_duration_seconds", stale, 99)
    lines = telemetry.render(redis)
    series = {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in lines if not line.startswith("#")}
    labels = 'status="finished",type="stylize"'
    assert series[f'instyle_job_duration_seconds_bucket{{{labels},le="0.01"}}'] == "0"
    assert series[f'instyle_job_duration_seconds_bucket{{{labels},le="0.025"}}'] == "1"
    assert series[f'instyle_job_duration_seconds_bucket{{{labels},le="0.5"}}'] == "3"  # cumulative
    assert series[f'instyle_job_duration_seconds_bucket{{{labels},le="+Inf"}}'] == "4"
    assert series[f"instyle_job_duration_seconds_count{{{labels}}}"] == "4"
    assert abs(float(series[f"instyle_job_duration_seconds_sum{{{labels}}}"]) - 40.62) < 1e-6
    assert series['instyle_model_cache_total{result="miss"}'] == "2"
    for metric in telemetry.METRICS.values():  # every metric announces itself, even before data
        assert f"# TYPE {metric.name} {metric.kind}" in lines


def test_label_values_are_escaped_and_sizes_bounded() -> None:
    redis = fakeredis.FakeRedis()
    telemetry.observe(redis, "instyle_inference_seconds", {"style": 'we"ird', "size": "512"}, 0.1)
    assert any('style="we\\"ird"' in line for line in telemetry.render(redis))
    assert telemetry.size_class(256, 100) == "256"
    assert telemetry.size_class(300, 513) == "1024"
    assert telemetry.size_class(9000, 10) == "8192+"


def test_recording_never_raises_when_redis_is_down() -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    telemetry.incr(dead, "instyle_model_cache_total", {"result": "hit"})
    telemetry.observe(dead, "instyle_model_load_duration_seconds", {}, 1.0)
    with pytest.raises(RedisConnectionError):  # rendering reports it; /metrics turns it into a comment
        telemetry.render(dead)
