"""Stability (StableAge) and job keys: duplicates create nothing, growth re-triggers."""

from __future__ import annotations

import io
from datetime import timedelta

from pydicom.uid import generate_uid
from sqlalchemy import select

from service.db.models import Job, JobState, utcnow
from service.db.session import Database
from service.stability import create_job, stable_studies
from service.store import Spool, parse_part10
from tests.service.dicom_factory import mr_dataset


def _put(spool: Spool, study: str, series: str, i: int) -> None:
    buf = io.BytesIO()
    mr_dataset(study, series, i).save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    spool.store(raw, parse_part10(raw), "dimse:PACS")


def test_stable_after_quiet_period_and_content_keys(spool: Spool, db: Database) -> None:
    study, series = generate_uid(), generate_uid()
    for i in range(3):
        _put(spool, study, series, i)
    assert stable_studies(db, 60, refusal_hold_s=0) == []
    later = utcnow() + timedelta(seconds=61)
    assert stable_studies(db, 60, now=later, refusal_hold_s=0) == [study]

    first = create_job(db, study)
    assert first is not None
    assert stable_studies(db, 60, now=later, refusal_hold_s=0) == []  # no longer dirty
    assert create_job(db, study) is None  # same content: no second job

    _put(spool, study, generate_uid(), 0)  # a new series arrives
    assert stable_studies(db, 60, now=utcnow() + timedelta(seconds=61), refusal_hold_s=0) == [study]
    second = create_job(db, study)
    assert second is not None and second != first
    with db.session() as s:
        states = {j.id: (j.state, j.n_instances) for j in s.scalars(select(Job))}
    assert states[first] == (JobState.SUPERSEDED, 3)  # it had not started yet
    assert states[second] == (JobState.QUEUED, 4)
