"""The training job: train -> export -> verify -> publish, with live progress for the API.

* Progress (iteration, losses, it/s, ETA) goes to ``job.meta`` on every report; a preview image
  from the current weights is refreshed every ``preview_every_s`` seconds.
* A background thread renews the job's lease (``worker.runner.keep_lease``) for as long as the
  job runs -- VGG loading, training, evaluation, export and publishing alike -- so a live job is
  never declared abandoned, while a dead worker's job is, once its lease runs out.
* Checkpoints go to the writable store's work area (``<store>/.work/<job id>/``), which any
  train worker sharing the store can read: a retried job resumes where the last one stopped.
* ``DELETE /v1/jobs/{id}`` is honoured before the next iteration, and up to the publish
  (``instyle.pipeline.train_and_publish``); nothing is published.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import get_current_job
from rq.job import JOB_ID_PATTERN as JOB_ID_RE
from rq.job import Job, JobStatus
from torch import nn

from instyle.assets import sample_photos
from instyle.pipeline import StyleSource, train_and_publish
from instyle.protocol import CANCEL_PREFIX, PREVIEW_PREFIX, ErrorCode, TrainPayload
from model_store.exceptions import StoreError
from stylenet.config import GeneratorConfig
from stylenet.exceptions import EmptyDataset, InvalidImage, TrainingDiverged, TrainingStopped
from stylenet.imageio import encode_image, load_image
from stylenet.inference import stylize_image
from stylenet.recipe import TrainRecipe
from stylenet.training import TrainProgress
from worker.context import current_context
from worker.jobs import fail_job, recorded
from worker.runner import ThreadWorker, current_worker, keep_lease

log = logging.getLogger(__name__)

#: Seconds the style image and preview stay in Redis.
PREVIEW_TTL_S = 24 * 3600
#: Seconds between progress writes to the job's meta.
REPORT_EVERY_S = 1.0
#: Points of (iteration, total loss) kept in the job status for the live loss curve.
LOSS_HISTORY_POINTS = 240


#: errno values that say a file system refuses writes (a full disk or quota, read-only, denied).
_UNWRITABLE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def store_write_problem(root: Path, exc: BaseException) -> str | None:
    """Why the store at ``root`` refuses writes, if ``exc`` came from that, else ``None``.

    An ``OSError`` that names a path in the store with a refusal errno is the store's; anything
    else (a photo that does not read, a bug) is, unless a file cannot be created in the store's
    work area right now."""
    if isinstance(exc, OSError) and exc.errno in _UNWRITABLE:
        name = exc.filename
        if name is None or Path(os.fsdecode(name)).resolve().is_relative_to(root.resolve()):
            return str(exc)
    probe = root / ".work" / f".probe-{os.getpid()}-{time.monotonic_ns()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"probe")
    except OSError as probe_error:
        return f"{probe_error} (while the job failed with: {exc})"
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    return None


#: RQ statuses of a job that will not run again: its checkpoint folder can go.
_ENDED_FOR_GOOD = frozenset(s.value.encode() for s in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED))


def sweep_work_dirs(redis: Redis, root: Path) -> list[str]:
    """Remove the checkpoint folders (``<root>/.work/<job id>/``) of training jobs that ended
    for good without cleaning up after themselves: a job that failed on its last attempt for a
    reason nobody expected keeps its folder (earlier attempts resume from it), and a job whose
    worker died with no retries left is failed by the registry cleanup, far from its folder.
    Folders of jobs that are queued, running or unknown (``instyle train --checkpoint-dir``
    also works under ``.work``) are left alone. Run by train workers' maintenance
    (``worker.runner.InstyleWorker.clean_registries``); returns the job ids removed."""
    work = root / ".work"
    if not work.is_dir():
        return []
    folders = [e for e in sorted(work.iterdir()) if e.is_dir() and JOB_ID_RE.fullmatch(e.name)]
    with redis.pipeline(transaction=False) as pipe:  # one round trip for all of them
        for entry in folders:
            pipe.hget(Job.key_for(entry.name), "status")
        statuses = pipe.execute() if folders else []
    removed = []
    for entry, status in zip(folders, statuses, strict=True):
        if status in _ENDED_FOR_GOOD:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    if removed:
        log.info("removed the checkpoints of %d ended training job(s): %s", len(removed), ", ".join(removed))
    return removed


def train_style(payload: dict[str, Any]) -> dict[str, Any]:
    """The job function (``instyle.protocol.TRAIN_JOB``); holds its lease for its whole run."""
    with keep_lease(), recorded("train"):
        return _train_style(payload)


def _train_style(payload: dict[str, Any]) -> dict[str, Any]:
    job = get_current_job()
    if job is not None and isinstance(done := job.meta.get("published"), dict):
        # An earlier attempt published the style, then found the job queued again: retried while it
        # still ran (its lease lapsed: a process stalled past it; or, before the API's registry
        # cleanup took RQ's maintenance lock, two cleanups at once, ``service.jobs.reap_abandoned``).
        # Training again would publish a second version from scratch (its checkpoints are gone).
        log.warning("job %s: an earlier attempt published %s already; not training again", job.id, done.get("style"))
        return dict(done)
    ctx = current_context()
    p = TrainPayload.model_validate(payload)
    job_id = job.id if job is not None else f"local-{int(time.time())}"
    redis = job.connection if job is not None else ctx.redis
    if ctx.settings.train_data is None or not Path(ctx.settings.train_data).is_dir():
        raise fail_job(ErrorCode.train_data_missing, "this worker has no training photos (set INSTYLE_TRAIN_DATA)")
    try:
        config = GeneratorConfig.from_dict(dict(p.generator))
        recipe = TrainRecipe.from_dict(dict(p.recipe))
    except (TypeError, ValueError) as exc:
        raise fail_job(ErrorCode.invalid_recipe, str(exc)) from None
    style_bytes = redis.get(p.style_key)
    if style_bytes is None:
        raise fail_job(ErrorCode.input_expired, "the style image expired before training started")
    catalog = ctx.cache.catalog
    if catalog.writable is None:
        raise fail_job(ErrorCode.internal, "no writable style store")
    work = catalog.writable.root / ".work" / job_id
    style_path = work / "style.img"
    try:
        work.mkdir(parents=True, exist_ok=True)
        style_path.write_bytes(style_bytes if isinstance(style_bytes, bytes) else style_bytes.encode())
    except OSError as exc:
        raise fail_job(ErrorCode.store_unwritable, f"the style store cannot be written: {exc}") from None
    resume = (work / "checkpoint.pt").is_file()
    if job is not None:
        job.meta["attempts"] = int(job.meta.get("attempts", 0)) + 1
        job.meta["resumed"] = resume
        job.save_meta()
    preview_photo = load_image(sample_photos()[0])
    last_preview = 0.0
    cancel_key = f"{CANCEL_PREFIX}{job_id}"
    worker = current_worker()
    server_stopped = False

    def should_stop() -> bool:
        nonlocal server_stopped
        if isinstance(worker, ThreadWorker) and worker.stopping:  # embedded mode: its Redis goes too
            server_stopped = True
            return True
        try:
            return bool(redis.exists(cancel_key))
        except RedisError:  # Redis away for a moment: the training goes on (asked again next iteration)
            log.warning("job %s: could not look for a cancel request", job_id, exc_info=True)
            return False

    last_report = 0.0
    history: list[list[float]] = list(job.meta.get("loss_history", [])) if job is not None else []

    def report(progress: TrainProgress, model: nn.Module) -> None:
        try:
            _report(progress, model)
        except RedisError:  # progress is for people watching: a Redis hiccup skips a report, not the run
            log.warning("job %s: could not record its progress", job_id, exc_info=True)

    def _report(progress: TrainProgress, model: nn.Module) -> None:
        nonlocal last_preview, last_report
        now = time.monotonic()
        final = progress.iteration == progress.total
        if job is None or (now - last_report < REPORT_EVERY_S and not final):
            return
        last_report = now
        history.append([progress.iteration, round(progress.losses["total"], 5)])
        if len(history) > LOSS_HISTORY_POINTS:  # thin out evenly, keep the newest point
            del history[-2::-2]
        job.meta.update(
            loss_history=history,
            progress=round(progress.iteration / progress.total, 4),
            iteration=progress.iteration,
            total=progress.total,
            losses={k: round(v, 5) for k, v in progress.losses.items()},
            it_per_s=round(progress.it_per_s, 3),
            eta_s=round(progress.eta_s, 1),
            elapsed_s=round(progress.elapsed_s, 1),
        )
        if now - last_preview >= p.preview_every_s or final:
            was_training = model.training
            model.eval()
            try:
                image = stylize_image(model, preview_photo, 256, device=next(model.parameters()).device)
            finally:
                model.train(was_training)
            redis.set(f"{PREVIEW_PREFIX}{job_id}", encode_image(image, "jpeg", 85), ex=PREVIEW_TTL_S)
            job.meta["preview_iteration"] = progress.iteration
            last_preview = now
        job.save_meta()

    try:
        published = train_and_publish(
            photos=ctx.settings.train_data,
            style=StyleSource(style_path, p.title, "uploaded with the training job", "as declared by the uploader"),
            name=p.name,
            catalog=catalog,
            config=config,
            recipe=recipe,
            preview_photos=sample_photos()[:4],
            device=str(ctx.device),
            checkpoint_dir=work,
            resume=resume,
            callback=report,
            should_stop=should_stop,
        )
    except TrainingStopped:
        shutil.rmtree(work, ignore_errors=True)
        if server_stopped:
            raise fail_job(ErrorCode.canceled, "the server stopped while it trained; nothing was published") from None
        raise fail_job(ErrorCode.canceled, "the training was canceled; nothing was published") from None
    except InvalidImage as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise fail_job(ErrorCode.invalid_image, str(exc)) from None
    except TrainingDiverged as exc:  # the recipe's doing: the same again would diverge again
        shutil.rmtree(work, ignore_errors=True)
        raise fail_job(ErrorCode.invalid_recipe, str(exc)) from None
    except EmptyDataset as exc:
        raise fail_job(ErrorCode.train_data_missing, str(exc)) from None
    except StoreError as exc:
        raise fail_job(ErrorCode.internal, str(exc)) from None
    except (OSError, RuntimeError) as exc:
        # a checkpoint or the published style could not be written (torch.save reports a full
        # disk as a RuntimeError): say so when the store is the cause, else it is unexpected
        problem = store_write_problem(catalog.writable.root, exc)
        if problem is None:
            raise
        raise fail_job(ErrorCode.store_unwritable, f"the style store cannot be written: {problem}") from None
    m = published.resolved.manifest
    shutil.rmtree(work, ignore_errors=True)
    result = {"style": m.ref, "final_losses": m.final_losses, "wall_time_s": m.training.get("wall_time_s")}
    if job is not None:
        job.meta.update(progress=1.0, style=m.ref, published=result)
        job.save_meta()
    return result
