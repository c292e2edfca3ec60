"""Worker settings (``INSTYLE_`` environment variables), validated at start."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from instyle.env import CommaList, RedisUrl
from stylenet.config import DEFAULT_BUFFER_POOL_MB, Precision

#: ``WorkerSettings.worker_ttl_s``'s default.
DEFAULT_WORKER_TTL_S = 60


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INSTYLE_", extra="ignore", env_ignore_empty=True)

    redis_url: RedisUrl = None
    store: Path | None = None
    #: Queues ``instyle worker`` serves when ``--queues`` is not given (comma-separated).
    queues: CommaList = Field(default_factory=lambda: ["stylize"])
    #: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    #: Compute precision of the generators: "auto" (bf16 on CPUs with native bf16, fp16 on
    #: CUDA, checked against fp32 when loaded), or "fp32" / "bf16" / "fp16" to force one.
    precision: Precision = "auto"
    #: Images with more megapixels than this run tiled, with exact instance-norm statistics,
    #: in bounded memory (``stylenet.tiling``); 0 tiles everything. Unset: per device
    #: (``stylenet.tiling.auto_tile_pixels``: 4.2 on a CPU, half the memory of a GPU).
    tile_megapixels: float | None = Field(default=None, ge=0)
    #: MiB of address space for the CPU engines' large buffers, kept from one pass to the next
    #: so that the kernel does not zero them afresh each time (``stylenet.buffers``: a 2048²
    #: Johnson pass 5-20 % faster at the same peak memory, docs/performance.md); 0 turns it off.
    #: Only the pages a pass writes are backed (0.8 GB after a 2048² Johnson pass), and a
    #: worker gives them back after 30 s without a pass (``worker.runner.ARENA_IDLE_S``).
    buffer_pool_mb: float = Field(default=DEFAULT_BUFFER_POOL_MB, ge=0)
    #: Stylize jobs a worker runs through the generator together when they wait in the queue
    #: (1 = no batching). benchmarks/service.py measures whether it wins on a given machine.
    batch_size: int = Field(default=1, ge=1, le=64)
    #: Stylize workers of the embedded mode (``instyle serve`` without Redis; processes or
    #: threads, ``stylize_processes``). Two overlap
    #: one image's decoding, encoding and queue bookkeeping with another's generator pass: +15-25 %
    #: images/s under load on 2 cores, the same latency alone (docs/performance.md). Each uses all
    #: of torch's CPU threads while it runs alone (a fixed split cost a lone request 80 %).
    stylize_threads: int = Field(default=2, ge=1, le=16)
    #: Stylize threads on a CPU split torch's threads among the passes running at once (alone,
    #: a pass gets them all; two at once get half each: ``worker.runner.ThreadShare``). Under
    #: load this keeps the OpenMP threads within the cores (docs/performance.md).
    share_threads: bool = True
    #: The embedded mode runs its stylize workers as child processes, each with an interpreter
    #: of its own (``worker.processes``), when its Redis is a private redis-server and the device
    #: a CPU; false: threads of the server's process. Under load the processes left the cores
    #: less idle (docs/performance.md, "Stylize workers as processes").
    stylize_processes: bool = True
    #: Generators kept in memory (LRU).
    cache_size: int = Field(default=8, ge=1)
    #: Styles loaded before the worker takes its first job (comma-separated ids).
    warm_styles: CommaList = Field(default_factory=list)
    #: Folder of content photos for training jobs (never uploaded per job).
    train_data: Path | None = None
    #: Seconds a training job's lease lasts without a heartbeat before it counts as abandoned.
    train_lease_s: int = Field(default=120, ge=1)
    #: The same for a stylize job: its worker renews it every third of it while the job runs, so
    #: a worker that dies mid-job has its job retried or failed (``worker_lost``) this long after.
    stylize_lease_s: int = Field(default=30, ge=2)
    #: Seconds an idle worker's registration outlives its last beat, less 60 (RQ's
    #: ``worker_ttl``): an idle worker beats every ``worker_ttl_s`` - 15 s, and ``/readyz`` stops
    #: counting a dead one at most ``worker_ttl_s`` + 60 s after its last beat (RQ's default 420
    #: left a dead worker counted for 8 minutes).
    worker_ttl_s: int = Field(default=DEFAULT_WORKER_TTL_S, ge=20)
    #: Seconds between the worker's registry maintenance (retries abandoned jobs).
    maintenance_s: int = Field(default=60, ge=1)
