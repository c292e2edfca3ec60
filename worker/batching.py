"""Batching in the worker: several waiting stylize jobs through the generator at once.

When a stylize job is dequeued and ``INSTYLE_BATCH_SIZE`` > 1, the worker also takes the jobs
already waiting in the queue (up to the batch size, without blocking) through RQ's own dequeue,
so each one stays in RQ's intermediate queue and registries exactly as if dequeued one by one.
``prefetch`` decodes their photos, groups them by (style, output size), and runs each group of
two or more as one batch. Then every job is executed the normal way, in order; a job whose
output was prefetched skips the generator (``worker.jobs``). A job whose photo cannot be
decoded, or that fits no group, just runs alone and succeeds or fails on its own.

Instance normalization keeps the batch exact: each image is normalized with its own
statistics, so a batched image equals the same image run alone.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from redis import Redis
from rq.job import Job
from rq.queue import Queue

from instyle.protocol import StylizePayload
from model_store.exceptions import StoreError
from stylenet.config import release_openmp_pool
from stylenet.exceptions import InvalidImage
from stylenet.imageio import load_pixels
from stylenet.inference import stylize_pixels
from worker.context import WorkerContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prefetched:
    """A job's stylized image, computed in a batch before the job itself runs."""

    pixels: torch.Tensor  # uint8 (H, W, 3)
    model_s: float  # this image's share of the batch's generator time
    batch: int  # images in its batch


def take_waiting(queue: Queue, limit: int, **dequeue: Any) -> list[Job]:
    """Up to ``limit`` jobs already waiting in ``queue`` (no blocking), dequeued the RQ way."""
    jobs: list[Job] = []
    while len(jobs) < limit:
        result = queue.dequeue_any([queue], None, connection=queue.connection, **dequeue)
        if result is None:
            break
        jobs.append(result[0])
    return jobs


@dataclass
class _Item:
    job_id: str
    photo: torch.Tensor  # its pixels, uint8 (H, W, 3), already resized to the job's max_size
    preserve_color: bool


def _load(job: Job, redis: Redis) -> tuple[str, _Item] | None:
    try:
        payload = StylizePayload.model_validate(job.args[0])
        data = redis.get(payload.input_key)
        if data is None:
            return None
        photo = load_pixels(data.encode() if isinstance(data, str) else data, payload.max_size)
    except (InvalidImage, ValueError, IndexError, TypeError):
        return None  # the job reports its own error when it runs
    return payload.style, _Item(job.id, photo, payload.preserve_color)


def prefetch(jobs: list[Job], ctx: WorkerContext, redis: Redis) -> dict[str, Prefetched]:
    """Stylize every group of >= 2 jobs with the same style and output size as one batch."""
    groups: dict[tuple[str, int, int], list[_Item]] = defaultdict(list)
    for job in jobs:
        loaded = _load(job, redis)
        if loaded is not None:
            style, item = loaded
            groups[(style, item.photo.shape[1], item.photo.shape[0])].append(item)
    out: dict[str, Prefetched] = {}
    for (style, w, h), items in groups.items():
        if len(items) < 2:
            continue
        try:
            generator, _ = ctx.cache.get(style)
        except StoreError:
            continue
        timings: dict[str, float] = {}
        images = stylize_pixels(
            generator, torch.stack([i.photo for i in items]), [i.preserve_color for i in items], ctx.device,
            ctx.tile_pixels, timings,
        )  # fmt: skip
        release_openmp_pool()  # as worker.jobs does after one photo
        share = timings["model_s"] / len(items)
        for item, image in zip(items, images, strict=True):
            out[item.job_id] = Prefetched(image, share, len(items))
        log.info("batched %d jobs for %s at %dx%d in %.3f s", len(items), style, w, h, timings["model_s"])
    return out
