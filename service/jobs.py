"""One job = one run of `model.pipeline.process` on one version of a study.

The same four steps serve the Celery task and the embedded worker:
`claim` (DB compare-and-set to ``running``), `run_pipeline` (no DB access, can
run in a child process), then `finish_success` (outputs recorded; the exporter
of `cmb serve` queues them for its destinations) or `finish_failure` (a
``CmbError`` is terminal: the study cannot be analysed and the reason is shown
over REST; anything else is retried with exponential back-off up to
``job_max_retries`` times, then terminal too).

Idempotency: a job that already finished is never claimed again; a re-run
writes into the job's own folder, which the pipeline replaces atomically.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from service import metrics
from service.db.models import Instance, Job, JobState, utcnow
from service.db.session import Database
from service.logs import redact_values
from service.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PROCESSOR = "model.pipeline:process"


class JobFailedError(Exception):
    """The pipeline refused the study (a model.errors.CmbError): terminal, not retried."""


@dataclass
class JobSpec:
    """Everything a pipeline run needs; picklable, so it can cross into a child process."""

    job_id: str
    study_instance_uid: str
    inputs: list[str]
    out_dir: str
    attempt: int
    options: dict[str, Any] = field(default_factory=dict)


def pipeline_options(settings: Settings) -> dict[str, Any]:
    return {
        "model_path": settings.model_path,
        "device": settings.device,
        "threads": settings.threads,
        "outputs": tuple(settings.outputs),
        "classifier": settings.classifier,
        "classifier_model_path": settings.classifier_model_path,
        "location": settings.location,
        "parcellation_model_path": settings.parcellation_model_path,
    }


def claim(
    db: Database, settings: Settings, job_id: str, worker_id: str, *, allow_running: bool = False
) -> JobSpec | None:
    """Move a queued job to ``running`` for this worker; None if it is not ours to run.

    ``allow_running``: a Celery redelivery after a worker died finds the job
    still ``running``; with acks_late the broker hands it to one worker at a
    time, so taking it over is safe.
    """
    states = [JobState.QUEUED, JobState.RUNNING] if allow_running else [JobState.QUEUED]
    now = utcnow()
    with db.session() as s:
        res = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.state.in_(states))
            .values(
                state=JobState.RUNNING,
                claimed_by=worker_id,
                started_at=now,
                updated_at=now,
                attempts=Job.attempts + 1,
            )
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return None
        job = s.get(Job, job_id)
        if job is None:
            return None
        paths = s.scalars(
            select(Instance.path)
            .where(Instance.study_instance_uid == job.study_instance_uid)
            .order_by(Instance.path)
        ).all()
        spec = JobSpec(
            job_id=job.id,
            study_instance_uid=job.study_instance_uid,
            inputs=list(paths),
            out_dir=str(settings.results_dir / job.id),
            attempt=job.attempts,
            options=pipeline_options(settings),
        )
    log.info("job running", extra={"job_id": job_id, "attempt": spec.attempt, "worker": worker_id})
    return spec


def _load(processor: str) -> Callable[..., Any]:
    module, _, name = processor.partition(":")
    return getattr(importlib.import_module(module), name)


def run_pipeline(spec: JobSpec, processor: str = DEFAULT_PROCESSOR) -> dict[str, Any]:
    """Run the pipeline; returns a JSON-able report. Raises JobFailedError for a CmbError."""
    from model.errors import CmbError
    from model.pipeline import PipelineOptions

    fn = _load(processor)
    options = PipelineOptions(**spec.options)
    t0 = time.perf_counter()
    try:
        outputs = fn([Path(p) for p in spec.inputs], Path(spec.out_dir), options)
    except CmbError as e:
        raise JobFailedError(f"{type(e).__name__}: {e}") from e
    if not outputs:
        raise JobFailedError("InputError: the pipeline found no study in the stored instances")
    out = outputs[0]
    result = out.result
    kept = result.kept
    mars: dict[str, int] = {}
    for d in kept:
        key = d.mars.value if d.mars else "unknown"
        mars[key] = mars.get(key, 0) + 1
    return {
        "files": {k: str(p) for k, p in out.files.items()},
        "summary": {
            "n_detections": len(kept),
            "n_candidates": len(result.detections),
            "mars": mars,
            "series_instance_uid": result.series.series_instance_uid,
            "selection_reason": result.selection.reason,
            "model": result.model.to_json(),
            "timings_s": {k: round(float(v), 3) for k, v in result.timings_s.items()},
            "duration_s": round(time.perf_counter() - t0, 3),
        },
    }


def finish_success(
    db: Database,
    settings: Settings,
    job_id: str,
    report: dict[str, Any],
    *,
    observe_here: bool = True,
) -> None:
    """Record the outputs; the exporter of `cmb serve` then queues them for its destinations.

    ``observe_here``: add the timings to this process's metrics (False in Celery
    workers, whose timings `cmb serve` picks up from the DB).
    """
    now = utcnow()
    files: dict[str, str] = report["files"]
    summary: dict[str, Any] = report["summary"]
    with db.session() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.state != JobState.RUNNING:
            log.warning("job result ignored: no longer running", extra={"job_id": job_id})
            return
        job.state = JobState.SUCCEEDED
        job.reason = None
        job.outputs = files
        job.summary = summary
        job.result_dir = str(Path(files["detections"]).parent) if "detections" in files else None
        job.finished_at = now
        job.updated_at = now
        job.next_attempt_at = None
    if observe_here:
        metrics.observe_job(summary)
    log.info(
        "job succeeded",
        extra={
            "job_id": job_id,
            "n_detections": summary.get("n_detections"),
            "series_instance_uid": summary.get("series_instance_uid"),
        },
    )


def finish_failure(
    db: Database, settings: Settings, job_id: str, reason: str, *, terminal: bool
) -> float | None:
    """Record a failure; returns the retry delay in seconds, or None when it is final."""
    now = utcnow()
    reason = reason.strip().splitlines()[0][:500] if reason.strip() else "unknown error"
    with db.session() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None:
            return None
        retry = not terminal and job.attempts <= settings.job_max_retries
        job.updated_at = now
        job.claimed_by = None
        if retry:
            delay = settings.job_retry_backoff_s * 2 ** max(job.attempts - 1, 0)
            job.state = JobState.QUEUED
            job.reason = f"attempt {job.attempts} failed, retrying: {reason}"
            job.next_attempt_at = now + timedelta(seconds=delay)
        else:
            delay = None
            job.state = JobState.FAILED
            job.reason = reason
            job.finished_at = now
            job.next_attempt_at = None
    metrics.JOB_SECONDS.labels("retry" if delay is not None else "failed").observe(0.0)
    log.warning(
        "job %s",
        "will retry" if delay is not None else "failed",
        extra={"job_id": job_id, "reason": redact_values(reason)},
    )
    return delay


def requeue_orphans(db: Database) -> int:
    """At start-up of the embedded worker: jobs left ``running`` by a dead process run again."""
    now = utcnow()
    with db.session() as s:
        res = s.execute(
            update(Job)
            .where(Job.state == JobState.RUNNING)
            .values(
                state=JobState.QUEUED,
                claimed_by=None,
                updated_at=now,
                next_attempt_at=now,
                reason="requeued after a restart",
            )
        )
        return int(res.rowcount)  # type: ignore[attr-defined]
