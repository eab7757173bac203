"""Retention: forget studies (spool files and results) older than ``retention_days``.

A hospital spool that only grows ends in 0xA700 (out of resources).  With
``CMB_RETENTION_DAYS`` set, a study whose last instance arrived longer ago
than that, and that has no job waiting, running or with results still to
deliver, is removed: its spool files and DB rows, and its jobs' result
folders.  The job rows stay (state, reason, summary) for the record; their
result files are gone (REST answers 404).
"""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, select

from service.db.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Refusal,
    Series,
    Study,
    utcnow,
)
from service.db.session import Database

log = logging.getLogger(__name__)

_BUSY = (JobState.QUEUED, JobState.RUNNING)


def purge_expired(db: Database, retention_days: float, limit: int = 50) -> list[str]:
    """Remove up to ``limit`` expired studies; returns their Study Instance UIDs.

    Refusals older than the retention period go too, also those of studies of which
    nothing was ever stored (store.py remembers every refusal).
    """
    cutoff = utcnow() - timedelta(days=retention_days)
    with db.session() as s:
        s.execute(delete(Refusal).where(Refusal.refused_at < cutoff))
        busy_job = select(Job.id).where(
            Job.study_instance_uid == Study.study_instance_uid, Job.state.in_(_BUSY)
        )
        undelivered = (
            select(Delivery.id)
            .join(Job, Job.id == Delivery.job_id)
            .where(
                Job.study_instance_uid == Study.study_instance_uid,
                Delivery.state != DeliveryState.SENT,  # pending or parked: kept
            )
        )
        uids = s.scalars(
            select(Study.study_instance_uid)
            .where(
                Study.last_received_at < cutoff,
                Study.dirty.is_(False),
                ~busy_job.exists(),
                ~undelivered.exists(),
            )
            .limit(limit)
        ).all()
    for uid in uids:
        _purge(db, uid)
    return list(uids)


def _purge(db: Database, study_uid: str) -> None:
    with db.session() as s:
        paths = s.scalars(select(Instance.path).where(Instance.study_instance_uid == study_uid))
        files = [Path(p) for p in paths]
        jobs = s.scalars(select(Job).where(Job.study_instance_uid == study_uid)).all()
        result_dirs = [Path(j.result_dir).parent for j in jobs if j.result_dir]
        for job in jobs:
            job.outputs = None
            job.result_dir = None
        s.execute(delete(Instance).where(Instance.study_instance_uid == study_uid))
        s.execute(delete(Series).where(Series.study_instance_uid == study_uid))
        s.execute(delete(Refusal).where(Refusal.study_instance_uid == study_uid))
        s.execute(delete(Study).where(Study.study_instance_uid == study_uid))
    for f in files:
        f.unlink(missing_ok=True)
    for level in (1, 2):  # series folders first, then the study folder
        for folder in {f.parents[level - 1] for f in files}:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    for folder in result_dirs:
        shutil.rmtree(folder, ignore_errors=True)
    log.info("study removed after the retention period", extra={"study_instance_uid": study_uid})
