"""The spool's durability argument: relaxed row commits for new instances, rows rebuilt from files.

A new instance's row is committed without waiting for the disk; its fsynced
file is the durable record, and `Spool.reindex` (run when a Spool is opened)
records every file whose row a crash lost.  These tests cut the process or
roll the database back to before a commit, and check that nothing is lost.
"""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select, update

import service.store as store_module
from service.db.models import Instance, Series, Study
from service.db.session import Database, relax_commit
from service.store import Spool, parse_part10
from tests.service.dicom_factory import mr_dataset

REPO = Path(__file__).resolve().parents[2]


def _raw(ds: object) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)  # type: ignore[attr-defined]
    return buf.getvalue()


def _copy_db(src: Path, dst: Path) -> None:
    """A consistent copy of a WAL database: the state a crash would leave at this moment."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


def _synchronous(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())


def test_only_a_new_instance_gets_a_relaxed_commit(
    spool: Spool, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []

    def spy(conn: object) -> bool:
        relaxed = relax_commit(conn)  # type: ignore[arg-type]
        calls.append(relaxed)
        return relaxed

    monkeypatch.setattr(store_module, "relax_commit", spy)
    ds = mr_dataset(generate_uid(), generate_uid(), 0)
    raw = _raw(ds)
    assert spool.store(raw, parse_part10(raw), "rest:test").outcome == "stored"
    assert calls == [True]  # SQLite in WAL mode, no transaction open yet
    assert _synchronous(db) == 2  # the pooled connection went back to FULL
    assert spool.store(raw, parse_part10(raw), "rest:test").outcome == "duplicate"
    ds.InstanceNumber = 7
    raw2 = _raw(ds)
    assert spool.store(raw2, parse_part10(raw2), "rest:test").outcome == "replaced"
    assert calls == [True]  # a replacement is committed durably
    assert _synchronous(db) == 2


def test_relax_commit_refuses_inside_an_open_sqlite_transaction(db: Database) -> None:
    with db.engine.connect() as conn:
        conn.exec_driver_sql("BEGIN")
        assert relax_commit(conn) is False
        conn.exec_driver_sql("ROLLBACK")
    assert _synchronous(db) == 2


def test_rows_lost_by_a_crash_are_rebuilt_from_the_files(tmp_path: Path) -> None:
    db_file, crashed = tmp_path / "db.sqlite", tmp_path / "crashed.sqlite"
    db = Database(f"sqlite:///{db_file}")
    spool = Spool(tmp_path / "spool", db, 0)
    study, series = generate_uid(), generate_uid()
    first = _raw(mr_dataset(study, series, 0))
    spool.store(first, parse_part10(first), "dimse:PACS")
    with db.session() as s:
        s.execute(update(Study).values(dirty=False))  # processed since
    _copy_db(db_file, crashed)  # the database as the crash will leave it
    later = [_raw(mr_dataset(study, series, i)) for i in (1, 2)]
    for raw in later:  # acknowledged: files fsynced, rows committed without a flush
        assert spool.store(raw, parse_part10(raw), "dimse:PACS").outcome == "stored"
    db.dispose()

    after = Database(f"sqlite:///{crashed}")  # power lost: the last two commits are gone
    with after.session() as s:
        assert len(s.scalars(select(Instance)).all()) == 1
    reopened = Spool(tmp_path / "spool", after, 0)  # the start-up reindex
    with after.session() as s:
        rows = {i.sop_instance_uid: i for i in s.scalars(select(Instance))}
        assert len(rows) == 3
        for raw in later:
            row = rows[parse_part10(raw).sop_instance_uid]
            assert row.source == "recovered"
            assert Path(row.path).read_bytes() == raw
        assert s.get(Series, series).n_instances == 3  # type: ignore[union-attr]
        assert s.get(Study, study).dirty  # type: ignore[union-attr]  # processed again
    assert reopened.reindex() == 0  # idempotent
    assert reopened.study_paths(study) == sorted(
        reopened.path_for(parse_part10(r)) for r in [first, *later]
    )
    after.dispose()


def test_a_crash_between_file_and_row_loses_nothing(tmp_path: Path) -> None:
    """The process dies after the fsynced file, before its row: the next start records it."""
    raw = _raw(mr_dataset(generate_uid(), generate_uid(), 0))
    (tmp_path / "in.dcm").write_bytes(raw)
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from service.db.session import Database
        from service.store import Spool, parse_part10
        db = Database("sqlite:///{tmp_path}/db.sqlite")
        spool = Spool(Path({str(tmp_path / "spool")!r}), db, 0)
        def crash(*args, **kw):
            os._exit(9)
        spool._record_retrying = crash
        raw = Path({str(tmp_path / "in.dcm")!r}).read_bytes()
        spool.store(raw, parse_part10(raw), "dimse:PACS")
        """
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=120, check=False)
    assert run.returncode == 9
    ids = parse_part10(raw)
    db = Database(f"sqlite:///{tmp_path}/db.sqlite")
    with db.session() as s:
        assert s.get(Instance, ids.sop_instance_uid) is None  # the file is there, its row not
    spool = Spool(tmp_path / "spool", db, 0)
    assert spool.path_for(ids).read_bytes() == raw
    with db.session() as s:
        row = s.get(Instance, ids.sop_instance_uid)
        assert row is not None and row.source == "recovered"
    # The sender was never answered and sends again: an identical duplicate.
    assert spool.store(raw, ids, "dimse:PACS").outcome == "duplicate"
    db.dispose()


def test_a_file_that_does_not_parse_is_left_in_place(
    tmp_path: Path, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "spool" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00" * 300)
    spool = Spool(tmp_path / "spool", db, 0)
    assert bad.exists()
    assert "not re-indexed" in caplog.text
    assert spool.reindex() == 0
    with db.session() as s:
        assert s.scalars(select(Instance)).all() == []


def test_a_resend_writes_no_file(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _raw(mr_dataset(generate_uid(), generate_uid(), 0))
    ids = parse_part10(raw)
    assert spool.store(raw, ids, "dimse:PACS").outcome == "stored"

    def no_write(*args: object) -> None:
        raise AssertionError("a duplicate must not be written again")

    monkeypatch.setattr(spool, "_write", no_write)
    assert spool.store(raw, ids, "dimse:PACS").outcome == "duplicate"
