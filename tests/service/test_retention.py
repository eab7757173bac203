"""Retention: old, finished studies leave the spool and the results; busy ones stay."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

from pydicom.uid import generate_uid
from sqlalchemy import select, update

from service.db.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Refusal,
    Study,
    utcnow,
)
from service.db.session import Database
from service.retention import purge_expired
from service.stability import create_job
from service.store import Spool, parse_part10
from tests.service.dicom_factory import mr_dataset


def _study(spool: Spool, db: Database, tmp_path: Path, state: JobState) -> tuple[str, Path]:
    study = generate_uid()
    buf = io.BytesIO()
    mr_dataset(study, generate_uid(), 0).save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    spool.store(raw, parse_part10(raw), "dimse:PACS")
    job_id = create_job(db, study)
    assert job_id is not None
    results = tmp_path / "results" / job_id / study
    results.mkdir(parents=True)
    (results / "sr.dcm").write_bytes(b"x")
    old = utcnow() - timedelta(days=40)
    with db.session() as s:
        s.execute(
            update(Study).where(Study.study_instance_uid == study).values(last_received_at=old)
        )
        job = s.get(Job, job_id)
        assert job is not None
        job.state = state
        job.result_dir = str(results)
        job.outputs = {"sr": str(results / "sr.dcm")}
    return study, results


def test_purge_expired(spool: Spool, db: Database, tmp_path: Path) -> None:
    done, done_results = _study(spool, db, tmp_path, JobState.DELIVERED)
    running, running_results = _study(spool, db, tmp_path, JobState.RUNNING)
    pending, _ = _study(spool, db, tmp_path, JobState.SUCCEEDED)
    parked, parked_results = _study(spool, db, tmp_path, JobState.SUCCEEDED)
    with db.session() as s:
        for study, state in ((pending, DeliveryState.PENDING), (parked, DeliveryState.PARKED)):
            job = s.scalars(select(Job).where(Job.study_instance_uid == study)).one()
            s.add(
                Delivery(
                    job_id=job.id,
                    destination="P@h:1",
                    kind="sr",
                    path="x",
                    state=state,
                    attempts=3,
                    next_attempt_at=utcnow(),
                )
            )
        for study in (done, running):  # an instance of each refused once (disk full)
            s.add(
                Refusal(
                    sop_instance_uid=generate_uid(), study_instance_uid=study, refused_at=utcnow()
                )
            )
        # and one of a study of which nothing landed, long ago
        s.add(
            Refusal(
                sop_instance_uid=generate_uid(),
                study_instance_uid=generate_uid(),
                refused_at=utcnow() - timedelta(days=61),
            )
        )
    assert purge_expired(db, retention_days=60) == []
    with db.session() as s:
        assert len(s.scalars(select(Refusal)).all()) == 2  # the old one is gone
    assert purge_expired(db, retention_days=30) == [done]
    with db.session() as s:
        assert s.get(Study, done) is None
        assert [r.study_instance_uid for r in s.scalars(select(Refusal))] == [running]
        left = {i.study_instance_uid for i in s.scalars(select(Instance))}
        job = s.scalars(select(Job).where(Job.study_instance_uid == done)).one()
        assert (job.state, job.outputs) == (JobState.DELIVERED, None)
    assert left == {running, pending, parked}  # an undelivered result is never purged
    assert parked_results.exists()
    assert not done_results.exists()
    assert running_results.exists()
    assert not (spool.root / done).exists()
