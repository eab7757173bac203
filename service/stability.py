"""When is a study complete?  After ``stable_after`` seconds without a new instance.

Like Orthanc's StableAge, stability is judged from arrival times: every series
of a study must have been quiet for ``stable_after`` seconds (the study's last
arrival is the newest of its series').  A stable study whose content changed
since its last job gets a new job; the job is keyed by the study and a hash of
its instances (SOP Instance UID + bytes), so a duplicate re-send creates
nothing, and a study that grows re-triggers once per new version.  The
pipeline's output UIDs are deterministic for a given input series and model,
so the PACS sees the re-run's SEG/SR replace the earlier ones.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from service.db.models import Instance, Job, JobState, Refusal, Study, utcnow
from service.db.session import Database

log = logging.getLogger(__name__)


def content_key(db: Database, study_instance_uid: str) -> tuple[str, int]:
    """Hash of the study's (SOP Instance UID, sha256) pairs, and the instance count."""
    with db.session() as s:
        rows = s.execute(
            select(Instance.sop_instance_uid, Instance.sha256)
            .where(Instance.study_instance_uid == study_instance_uid)
            .order_by(Instance.sop_instance_uid)
        ).all()
    h = hashlib.sha256()
    for uid, digest in rows:
        h.update(f"{uid}:{digest}\n".encode())
    return h.hexdigest(), len(rows)


def stable_studies(
    db: Database, stable_after: float, now: datetime | None = None, *, refusal_hold_s: float
) -> list[str]:
    """Studies with new content whose last instance arrived at least ``stable_after`` s ago.

    A study with an instance refused for lack of space (store.py) less than
    ``refusal_hold_s`` ago is not among them while that instance has not been stored:
    its sender retries later (a PACS's retry interval is often minutes), and what
    landed meanwhile is part of a series, not the study to report on.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=stable_after)
    waiting = select(Refusal.study_instance_uid).where(
        Refusal.refused_at > now - timedelta(seconds=refusal_hold_s)
    )
    with db.session() as s:
        return list(
            s.scalars(
                select(Study.study_instance_uid).where(
                    Study.dirty.is_(True),
                    Study.last_received_at <= cutoff,
                    Study.study_instance_uid.not_in(waiting),
                )
            ).all()
        )


def create_job(db: Database, study_instance_uid: str) -> str | None:
    """Queue a job for the study's current content; None when that content already has one.

    The study's ``dirty`` flag is cleared only if no instance arrived meanwhile
    (compare-and-set on ``last_received_at``), so an arrival during this call
    is never lost: the study simply stays dirty and is looked at again.
    """
    with db.session() as s:
        study = s.get(Study, study_instance_uid)
        if study is None:
            return None
        seen_at = study.last_received_at
        refused = s.scalar(
            select(func.count())
            .select_from(Refusal)
            .where(Refusal.study_instance_uid == study_instance_uid)
        )
    key, n = content_key(db, study_instance_uid)
    try:
        job_id = _insert_job(db, study_instance_uid, key, n, seen_at)
    except IntegrityError:  # another thread queued the same content at the same moment
        return None
    if job_id:
        log.info(
            "job queued",
            extra={"job_id": job_id, "study_instance_uid": study_instance_uid, "n_instances": n},
        )
        if refused:
            log.warning(
                "study processed without %d instance(s) refused for lack of space and not "
                "sent again within the refusal hold",
                refused,
                extra={"job_id": job_id, "study_instance_uid": study_instance_uid},
            )
    return job_id


def _insert_job(
    db: Database, study_instance_uid: str, key: str, n: int, seen_at: datetime
) -> str | None:
    now = utcnow()
    with db.session() as s:
        existing = s.scalar(
            select(Job.id).where(
                Job.study_instance_uid == study_instance_uid, Job.content_key == key
            )
        )
        job_id: str | None = None
        if existing is None and n > 0:
            job_id = uuid.uuid4().hex
            s.execute(
                update(Job)
                .where(Job.study_instance_uid == study_instance_uid, Job.state == JobState.QUEUED)
                .values(
                    state=JobState.SUPERSEDED, reason=f"superseded by job {job_id}", updated_at=now
                )
            )
            s.add(
                Job(
                    id=job_id,
                    study_instance_uid=study_instance_uid,
                    content_key=key,
                    n_instances=n,
                    state=JobState.QUEUED,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                    next_attempt_at=now,
                )
            )
        s.execute(
            update(Study)
            .where(
                Study.study_instance_uid == study_instance_uid,
                Study.last_received_at == seen_at,
            )
            .values(dirty=False)
        )
    return job_id
