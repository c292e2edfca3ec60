"""Worker batching: waiting stylize jobs of one style and size share a generator run, and each
still ends as its own job with the same image it would get alone."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis

from stylenet.export import psnr
from tests.conftest import ASSET_PHOTOS
from tests.service.test_api import post
from worker.context import build_context
from worker.runner import make_worker
from worker.settings import WorkerSettings


def _photo(name: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.open(ASSET_PHOTOS / name).convert("RGB").resize(size).save(buf, "PNG")
    return buf.getvalue()


def _submit_all(client: TestClient) -> list[str]:
    cat, coffee = _photo("skimage_chelsea.jpg", (64, 48)), _photo("skimage_coffee.jpg", (64, 48))
    odd = _photo("skimage_astronaut.jpg", (40, 40))
    forms = [
        (cat, {}),
        (coffee, {}),
        (odd, {}),  # another size: runs alone
        (cat, {"preserve_color": "true"}),
        (coffee, {"style": "missing@1"}),  # refused by the API: never queued
    ]
    ids = []
    for data, extra in forms:
        r = post(client, data, max_size="48", format="png", **extra)  # type: ignore[arg-type]
        if r.status_code == 202:  # type: ignore[attr-defined]
            ids.append(r.json()["job_id"])  # type: ignore[attr-defined]
    return ids


def _run(redis_url: str, store: Path, batch_size: int) -> None:
    redis = Redis.from_url(redis_url)
    build_context(WorkerSettings(redis_url=redis_url, store=store, device="cpu", batch_size=batch_size), redis)
    make_worker(redis, ["stylize"], batch_size=batch_size).work(burst=True, with_scheduler=False)


def _results(client: TestClient, ids: list[str]) -> list[tuple[dict[str, object], np.ndarray]]:
    out = []
    for job_id in ids:
        view = client.get(f"/v1/jobs/{job_id}").json()
        assert view["status"] == "finished", view
        image = client.get(f"/v1/jobs/{job_id}/result")
        out.append((view["detail"], np.asarray(Image.open(io.BytesIO(image.content)), dtype=np.int16)))
    return out


def test_waiting_jobs_share_a_batch_and_match_single_runs(client: TestClient, redis_url: str, tiny_store: Path) -> None:
    batched_ids = _submit_all(client)
    assert len(batched_ids) == 4
    _run(redis_url, tiny_store, batch_size=8)
    batched = _results(client, batched_ids)
    assert [d.get("batch") for d, _ in batched] == [3, 3, None, 3]
    assert all(float(str(d["model_ms"])) > 0 for d, _ in batched)

    single_ids = _submit_all(client)
    _run(redis_url, tiny_store, batch_size=1)
    single = _results(client, single_ids)
    assert all("batch" not in d for d, _ in single)
    for (_, a), (_, b) in zip(batched, single, strict=True):
        assert a.shape == b.shape
        # same image up to rounding (bf16 convolutions pick other kernels for a batch)
        assert psnr(torch.from_numpy(a / 255.0), torch.from_numpy(b / 255.0)) >= 40.0


def test_batch_size_one_takes_one_job_at_a_time(client: TestClient, redis_url: str, tiny_store: Path) -> None:
    ids = _submit_all(client)
    _run(redis_url, tiny_store, batch_size=1)
    assert all("batch" not in d for d, _ in _results(client, ids))
