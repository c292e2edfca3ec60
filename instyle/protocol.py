"""The job contract between the API and the workers. Torch-free: both sides import it.

Jobs are enqueued by dotted path with JSON payloads (RQ's JSON serializer; no pickle crosses
Redis). Images travel by reference: a Redis key with a TTL.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: RQ queue names.
QUEUE_STYLIZE = "stylize"
QUEUE_TRAIN = "train"
QUEUES = (QUEUE_STYLIZE, QUEUE_TRAIN)

#: Job functions, by dotted path, so the API never imports worker code.
STYLIZE_JOB = "worker.jobs.stylize"
TRAIN_JOB = "worker.training.train_style"

#: Redis key prefixes of image blobs.
INPUT_PREFIX = "instyle:in:"
RESULT_PREFIX = "instyle:out:"
#: A key ``CANCEL_PREFIX + job_id`` asks a running job to stop at its next check point
#: (non-forking workers cannot kill a job from outside).
CANCEL_PREFIX = "instyle:cancel:"
#: Style images of training jobs, and the live preview of a running training.
STYLE_IMAGE_PREFIX = "instyle:style:"
PREVIEW_PREFIX = "instyle:preview:"

#: Redis hash where workers record generator load times (field: style ref, value: seconds).
MODEL_LOAD_KEY = "instyle:metrics:model_load_s"

OutputFormat = Literal["jpeg", "png", "webp"]
CONTENT_TYPES: dict[str, str] = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


class JobStatus(StrEnum):
    """The one status vocabulary of the API, whatever RQ calls its states."""

    queued = "queued"
    started = "started"
    finished = "finished"
    failed = "failed"
    canceled = "canceled"


class ErrorCode(StrEnum):
    """Stable machine-readable reasons a job failed."""

    input_expired = "input_expired"
    invalid_image = "invalid_image"
    style_not_found = "style_not_found"
    artifact_corrupt = "artifact_corrupt"
    timeout = "timeout"
    canceled = "canceled"
    train_data_missing = "train_data_missing"
    invalid_recipe = "invalid_recipe"
    worker_lost = "worker_lost"
    store_unwritable = "store_unwritable"
    internal = "internal"


class StylizePayload(BaseModel):
    """What a stylize job needs; the photo is the Redis key ``input_key``."""

    model_config = ConfigDict(extra="forbid")

    input_key: str
    style: str  # "id" or "id@version"
    max_size: int = Field(ge=16, le=16384)
    format: OutputFormat = "jpeg"
    quality: int = Field(default=90, ge=1, le=100)
    preserve_color: bool = False
    result_ttl_s: int = Field(default=3600, ge=1)


class StylizeResult(BaseModel):
    """The return value of a stylize job (stored by RQ as JSON)."""

    result_key: str
    content_type: str
    width: int
    height: int
    style: str  # resolved "id@version"
    model_ms: float


class TrainPayload(BaseModel):
    """What a training job needs; the style image is the Redis key ``style_key``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    title: str = ""
    style_key: str
    generator: dict[str, object]  # stylenet.config.GeneratorConfig fields
    recipe: dict[str, object]  # stylenet.recipe.TrainRecipe fields
    #: Seconds between live previews (a stylized sample from the current weights).
    preview_every_s: float = Field(default=20.0, gt=0)
