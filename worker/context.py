"""Per-process worker state (settings, Redis, device, generator cache), built once at start."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from instyle import telemetry
from instyle.protocol import MODEL_LOAD_KEY
from model_store.shipped import open_catalog
from stylenet import buffers
from stylenet.fast import prepare_device
from stylenet.tiling import tile_threshold
from stylenet.training import pick_device
from worker.cache import GeneratorCache
from worker.settings import WorkerSettings

if TYPE_CHECKING:
    from worker.batching import Prefetched

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class WorkerContext:
    settings: WorkerSettings
    redis: Redis
    device: torch.device
    cache: GeneratorCache
    #: Images with more pixels than this run tiled (``settings.tile_megapixels`` or per device).
    tile_pixels: int
    #: Outputs of stylize jobs computed ahead in a batch, by job id (``worker.batching``).
    prefetched: dict[str, Prefetched] = field(default_factory=dict)
    #: Generator cache lookups not yet counted in Redis, by result ("hit", "miss").
    lookups: Counter[str] = field(default_factory=Counter)
    _lookups_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_lookup(self, hit: bool) -> None:
        """The cache's ``on_lookup``: counted here, sent by ``send_lookups`` with a job's own
        commands (a round trip of its own cost every stylize job ~0.1 ms of CPU)."""
        with self._lookups_lock:
            self.lookups["hit" if hit else "miss"] += 1

    def send_lookups(self, pipe: Pipeline) -> None:
        """Queue the lookups counted so far on ``pipe`` (``instyle_model_cache_total``). A
        pipeline that fails loses them: a metric, never a job."""
        with self._lookups_lock:
            pending, self.lookups = self.lookups, Counter()
        for result, n in sorted(pending.items()):
            telemetry.incr(pipe, "instyle_model_cache_total", {"result": result}, n)


_context: WorkerContext | None = None


def build_context(settings: WorkerSettings, redis: Redis) -> WorkerContext:
    """Create the process's context, warm the configured styles, and make it current."""
    global _context
    device = pick_device(settings.device)
    prepare_device(device)
    buffers.configure(int(settings.buffer_pool_mb * (1 << 20)))

    def record_load(ref: str, seconds: float) -> None:
        try:
            redis.hset(MODEL_LOAD_KEY, ref, f"{seconds:.4f}")
        except RedisError:
            log.debug("could not record model load time", exc_info=True)
        telemetry.observe(redis, "instyle_model_load_duration_seconds", {}, seconds)

    cache = GeneratorCache(
        open_catalog(settings.store), device, settings.cache_size, on_load=record_load, precision=settings.precision
    )
    tile_pixels = tile_threshold(settings.tile_megapixels, device)
    context = WorkerContext(settings=settings, redis=redis, device=device, cache=cache, tile_pixels=tile_pixels)
    cache.on_lookup = context.count_lookup
    in_passing_thread(cache.warm, settings.warm_styles)
    _context = context
    return context


def in_passing_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a thread of its own: wait for it, return its result, re-raise its error.

    torch's parallel CPU code runs on an OpenMP thread pool that lives as long as the thread
    that first ran it. An idle pool still counts: with more OpenMP threads than cores, libgomp's
    workers stop spinning between parallel regions and sleep, and every pass slows down. A
    pool left on an embedded server's main thread by loading made a stylize thread's 512² pass
    take 68-71 ms instead of 57-59. Loading runs in a passing thread, which takes its pool with
    it when it ends: a one-thread server's lone 512² request then took 61.6 ms of model time
    against 69.9. (A worker thread lets its own pool go after each job the same way:
    ``ThreadWorker.execute_job``, ``stylenet.config.release_openmp_pool``.)
    (Running each job's generator pass in one too was measured and lost: 11.6 against 12.8-13.6
    images/s with 8 clients, as every pass then starts a fresh pool.)
    """
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn(*args))
        except BaseException as exc:  # re-raised on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"{threading.current_thread().name}-torch")
    thread.start()
    while thread.is_alive():  # in slices: an exception raised asynchronously here (a job timeout) gets through
        thread.join(0.05)
    if failure:
        raise failure[0]
    return result[0]


def built_context() -> WorkerContext | None:
    """The context built at start, if one was (``current_context`` builds one otherwise)."""
    return _context


def current_context() -> WorkerContext:
    """The context built at start; job functions run outside a worker build one from the env."""
    if _context is None:
        settings = WorkerSettings()
        if not settings.redis_url:
            raise RuntimeError("no worker context: start jobs through `instyle worker` or `instyle serve`")
        return build_context(settings, Redis.from_url(settings.redis_url))
    return _context
