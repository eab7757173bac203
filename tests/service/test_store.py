"""The spool: durable write, DB record, idempotent duplicates, replacement, refusals."""

from __future__ import annotations

import io
import shutil
from datetime import timedelta

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from service.db.models import Instance, Refusal, Study
from service.db.session import Database
from service.metrics import DatabaseCollector
from service.stability import stable_studies
from service.store import NotStorableError, OutOfResourcesError, Spool, parse_part10
from tests.service.dicom_factory import CT_IMAGE_STORAGE, mr_dataset


def _raw(ds: object) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)  # type: ignore[attr-defined]
    return buf.getvalue()


def test_store_duplicate_and_replace(spool: Spool, db: Database) -> None:
    ds = mr_dataset(generate_uid(), generate_uid(), 0)
    raw = _raw(ds)
    ids = parse_part10(raw)
    first = spool.store(raw, ids, "rest:test")
    assert first.outcome == "stored"
    path = spool.path_for(ids)
    assert path.read_bytes() == raw
    assert path.parent.parent.parent == spool.root
    assert spool.store(raw, ids, "rest:test").outcome == "duplicate"
    with db.session() as s:
        s.execute(update(Study).values(dirty=False))
    ds.InstanceNumber = 99  # same UID, new bytes: replaces and marks the study changed
    raw2 = _raw(ds)
    assert spool.store(raw2, parse_part10(raw2), "rest:test").outcome == "replaced"
    assert path.read_bytes() == raw2
    with db.session() as s:
        assert len(s.scalars(select(Instance)).all()) == 1
        assert s.get(Study, ids.study_instance_uid).dirty  # type: ignore[union-attr]
    assert not list(path.parent.glob(".*.tmp"))


def test_refusals(spool: Spool) -> None:
    with pytest.raises(NotStorableError, match="not a DICOM file"):
        parse_part10(b"\x00" * 200)
    ct = _raw(mr_dataset(generate_uid(), generate_uid(), 0, sop_class_uid=CT_IMAGE_STORAGE))
    with pytest.raises(NotStorableError, match="not supported"):
        spool.store(ct, parse_part10(ct), "rest:test")
    spool.reserve_bytes = shutil.disk_usage(spool.root).total + 1
    raw = _raw(mr_dataset(generate_uid(), generate_uid(), 0))
    with pytest.raises(OutOfResourcesError, match="below the reserve"):
        spool.store(raw, parse_part10(raw), "rest:test")


def _waiting_for_refused(db: Database) -> float:
    metric = next(
        m for m in DatabaseCollector(db).collect() if m.name == "cmb_studies_waiting_for_refused"
    )
    return metric.samples[0].value


def test_a_refused_instance_holds_its_study(spool: Spool, db: Database) -> None:
    """What landed of a study is not taken for the whole study while its sender is still
    being refused (each refusal restarts the study's quiet time), nor before the refused
    instance is sent again, up to the refusal hold (disk full, reliability.md bugs 9, 11)."""
    study, series = generate_uid(), generate_uid()
    first = _raw(mr_dataset(study, series, 0))
    spool.store(first, parse_part10(first), "dimse:PACS")
    with db.session() as s:
        landed_at = s.get(Study, study).last_received_at  # type: ignore[union-attr]
    assert stable_studies(db, 0.2, now=landed_at + timedelta(seconds=1), refusal_hold_s=60) == [
        study
    ]
    spool.reserve_bytes = shutil.disk_usage(spool.root).total + 1
    second = _raw(mr_dataset(study, series, 1))
    second_ids = parse_part10(second)
    for _ in range(2):  # the sender is refused twice: one refusal remembered
        with pytest.raises(OutOfResourcesError):
            spool.store(second, second_ids, "dimse:PACS")
    with db.session() as s:
        row = s.get(Study, study)
        assert row is not None
        held_at = row.last_received_at
        assert held_at > landed_at
        assert row.dirty
        assert len(s.scalars(select(Instance)).all()) == 1  # the refused one is not recorded
        refusals = s.scalars(select(Refusal)).all()
        assert [(r.sop_instance_uid, r.study_instance_uid) for r in refusals] == [
            (second_ids.sop_instance_uid, study)
        ]
        assert refusals[0].refused_at == held_at

    assert _waiting_for_refused(db) == 1  # the gauge an alert watches

    def stable(after_s: float) -> list[str]:
        return stable_studies(db, 0.2, now=held_at + timedelta(seconds=after_s), refusal_hold_s=60)

    assert stable(0.1) == []  # quiet time restarted
    assert stable(1) == []  # quiet, but the refused instance has not come back
    assert stable(61) == [study]  # the hold is over: what landed is processed
    assert stable_studies(db, 0.2, now=held_at + timedelta(seconds=1), refusal_hold_s=0) == [study]
    # Space again: the sender sends it again, the refusal is forgotten, the study is whole.
    spool.reserve_bytes = 0
    spool.store(second, second_ids, "dimse:PACS")
    assert _waiting_for_refused(db) == 0
    with db.session() as s:
        assert s.scalars(select(Refusal)).all() == []
        stored_at = s.get(Study, study).last_received_at  # type: ignore[union-attr]
    assert stable_studies(db, 0.2, now=stored_at + timedelta(seconds=1), refusal_hold_s=60) == [
        study
    ]
    # A study of which nothing landed yet: no study row, but its refusal holds what lands
    # next (space came back between two instances).
    spool.reserve_bytes = shutil.disk_usage(spool.root).total + 1
    other_study, other_series = generate_uid(), generate_uid()
    refused = _raw(mr_dataset(other_study, other_series, 0))
    with pytest.raises(OutOfResourcesError):
        spool.store(refused, parse_part10(refused), "dimse:PACS")
    with db.session() as s:
        assert s.get(Study, other_study) is None
        assert [r.study_instance_uid for r in s.scalars(select(Refusal))] == [other_study]
    spool.reserve_bytes = 0
    landed = _raw(mr_dataset(other_study, other_series, 1))
    spool.store(landed, parse_part10(landed), "dimse:PACS")
    with db.session() as s:
        landed_at = s.get(Study, other_study).last_received_at  # type: ignore[union-attr]
    assert other_study not in stable_studies(
        db, 0.2, now=landed_at + timedelta(seconds=1), refusal_hold_s=60
    )
