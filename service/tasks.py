"""Celery: the production job queue (Redis broker), same job steps as the embedded worker.

Reliability settings, and why:

* ``acks_late`` + ``reject_on_worker_lost``: the message is acknowledged only
  after the task returns; a worker killed mid-job (OOM, node lost) puts it back
  on the queue and another worker takes the job over (it is still ``running``
  in the DB, and the task claims running jobs too).
* ``worker_prefetch_multiplier=1``: a worker holds one job at a time per
  process, so a slow GPU does not hoard a queue.
* bounded retries: a transient fault re-queues the job with ``countdown`` =
  back-off x 2^(attempt-1), at most ``job_max_retries`` times; a
  ``CmbError`` (unusable study) is terminal at once.
* time limits: soft = ``job_time_limit_s`` (the job is marked failed), hard =
  soft + 30 s (the pool kills the child).
"""

from __future__ import annotations

import logging
import os
import socket
from functools import cache
from typing import Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded

from service import jobs
from service.db.session import Database
from service.settings import Settings, load_settings

log = logging.getLogger(__name__)

TASK_NAME = "cmb.run_job"


def make_celery(settings: Settings) -> Celery:
    if not settings.broker_url:
        raise ValueError("Celery needs CMB_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
    app = Celery("cmb", broker=settings.broker_url)
    limit = settings.job_time_limit_s
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        task_ignore_result=True,
        task_soft_time_limit=limit,
        task_time_limit=limit + 30,
        # A message not acked within this time is redelivered: longer than any job.
        broker_transport_options={"visibility_timeout": int(limit * 2 + 60)},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
    )
    app.task(
        name=TASK_NAME,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=settings.job_max_retries,
    )(_run_job)
    return app


@cache
def _context() -> tuple[Settings, Database]:
    """Settings and DB of this worker process (built lazily, after the pool forked)."""
    settings = load_settings()
    return settings, Database(settings.db_url, migrate_schema=False)


def _run_job(self: Task, job_id: str) -> str:
    settings, db = _context()
    worker_id = f"celery@{socket.gethostname()}:{os.getpid()}"
    # A job still "running" here was held by a worker that died (the broker gave the message
    # back); take it over.  A rare duplicate message (the monitor's re-send of a job nobody
    # took) can make two runs overlap: both write the same outputs atomically and only the
    # first finish is recorded, so the cost is compute, not correctness.
    spec = jobs.claim(db, settings, job_id, worker_id, allow_running=True)
    if spec is None:
        return "skipped"
    try:
        report: dict[str, Any] = jobs.run_pipeline(spec, settings.pipeline)
    except jobs.JobFailedError as e:
        jobs.finish_failure(db, settings, job_id, str(e), terminal=True)
        return "failed"
    except SoftTimeLimitExceeded:
        jobs.finish_failure(
            db,
            settings,
            job_id,
            f"time limit of {settings.job_time_limit_s:.0f} s exceeded",
            terminal=True,
        )
        return "failed"
    except Exception as e:
        delay = jobs.finish_failure(
            db, settings, job_id, f"{type(e).__name__}: {e}", terminal=False
        )
        if delay is None:
            return "failed"
        raise self.retry(countdown=delay, exc=e) from e
    jobs.finish_success(db, settings, job_id, report, observe_here=False)
    return "succeeded"


def dispatch(app: Celery, settings: Settings, job_id: str) -> None:
    app.send_task(TASK_NAME, args=[job_id], queue=settings.queue)
