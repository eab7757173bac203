"""The outbox is FIFO per destination: no result lands before an older one.

A plain pynetdicom Storage SCP is the destination; it refuses the SOP
instances listed in ``refuse`` (status 0xA700) and records the others.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, StoragePresentationContexts, evt
from sqlalchemy import select

from service import outbox
from service.db.models import Delivery, DeliveryState, Job, JobState, utcnow
from service.db.session import Database
from service.export import Exporter
from service.metrics import DatabaseCollector
from service.settings import Settings, load_settings
from tests.service.conftest import add_succeeded_job, free_port


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []
        self.refuse: set[str] = set()
        self._lock = threading.Lock()
        ae = AE(ae_title="PACS")
        ae.supported_contexts = StoragePresentationContexts
        server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )
        if server is None:
            raise RuntimeError("pynetdicom returned no server for block=False")
        self.server = server

    def _store(self, event: evt.Event) -> int:
        uid = str(event.dataset.SOPInstanceUID)
        with self._lock:
            if uid in self.refuse:
                return 0xA700
            self.received.append(uid)
        return 0x0000


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The outbox on both supported databases (SQLite embedded, PostgreSQL in production)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'outbox.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = Database(url)
    yield database
    database.dispose()


def _settings(tmp_path: Path, port: int) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        destinations=[f"PACS@127.0.0.1:{port}"],
        dimse_timeout_s=10,
        export_backoff_s=30,
        export_max_backoff_s=60,
        log_format="text",
    )


def _job(db: Database, tmp_path: Path, finished_s_ago: float, **kw: Any) -> tuple[str, str]:
    """A succeeded job with one SR result file; returns (job id, SOP Instance UID)."""
    finished = utcnow() - timedelta(seconds=finished_s_ago)
    return add_succeeded_job(db, tmp_path, finished_at=finished, **kw)


def _rows(db: Database) -> dict[str, Delivery]:
    with db.session() as s:
        rows = list(s.scalars(select(Delivery).order_by(Delivery.id)))
        for r in rows:
            s.expunge(r)
    return {r.job_id: r for r in rows}


def test_outbox_rows_follow_completion_order(tmp_path: Path, db: Database) -> None:
    """Queued together, the job that finished first gets the lower outbox id."""
    settings = _settings(tmp_path, free_port())
    newer, _ = _job(db, tmp_path, finished_s_ago=1)
    older, _ = _job(db, tmp_path, finished_s_ago=5)
    assert Exporter(settings, db).enqueue() == 2
    rows = _rows(db)
    assert rows[older].id < rows[newer].id


def test_a_new_result_takes_the_older_waiting_one_first(
    tmp_path: Path, db: Database, receiver: Receiver
) -> None:
    settings = _settings(tmp_path, receiver.port)
    exporter = Exporter(settings, db)
    older, older_uid = _job(db, tmp_path, finished_s_ago=5)
    exporter.enqueue()
    with db.session() as s:  # the older result waits out a long back-off
        row = s.scalars(select(Delivery).where(Delivery.job_id == older)).one()
        row.attempts, row.next_attempt_at = 3, utcnow() + timedelta(hours=1)
    assert exporter.run_once() == 0  # nothing due: the destination is not tried
    assert receiver.received == []
    _, newer_uid = _job(db, tmp_path, finished_s_ago=1)
    assert exporter.run_once() == 2
    assert receiver.received == [older_uid, newer_uid]
    with db.session() as s:
        assert {j.state for j in s.scalars(select(Job))} == {JobState.DELIVERED}


def test_a_refused_result_holds_back_the_newer_ones(
    tmp_path: Path, db: Database, receiver: Receiver
) -> None:
    settings = _settings(tmp_path, receiver.port)
    exporter = Exporter(settings, db)
    older, older_uid = _job(db, tmp_path, finished_s_ago=5)
    newer, newer_uid = _job(db, tmp_path, finished_s_ago=1)
    receiver.refuse.add(older_uid)
    assert exporter.run_once() == 0
    assert receiver.received == []  # the newer one was not sent past the refused one
    rows = _rows(db)
    head, held = rows[older], rows[newer]
    assert head.state == held.state == DeliveryState.PENDING
    assert head.attempts == 1 and head.last_error == "C-STORE status 0xA700"
    assert held.attempts == 0 and "waiting behind an older result" in (held.last_error or "")
    assert held.next_attempt_at >= head.next_attempt_at > utcnow() + timedelta(seconds=20)
    # What an alert reads: two files wait for this destination, the oldest since its job ended.
    backlog = _destination_gauges(db)
    destination = settings.destinations[0]
    assert backlog["cmb_destination_backlog"] == {destination: 2.0}
    assert 5.0 <= backlog["cmb_destination_oldest_pending_seconds"][destination] < 60.0
    # Once the destination takes it, both land, in order.
    receiver.refuse.clear()
    with db.session() as s:
        for r in s.scalars(select(Delivery)):
            r.next_attempt_at = utcnow()
    assert exporter.run_once() == 2
    assert receiver.received == [older_uid, newer_uid]
    assert _destination_gauges(db) == {
        "cmb_destination_backlog": {},
        "cmb_destination_oldest_pending_seconds": {},
        "cmb_destination_parked": {},
    }


def test_a_parked_head_lets_the_newer_results_go_and_waits_to_be_requeued(
    tmp_path: Path, db: Database, receiver: Receiver
) -> None:
    settings = _settings(tmp_path, receiver.port)
    destination = settings.destinations[0]
    exporter = Exporter(settings, db)
    older, older_uid = _job(db, tmp_path, finished_s_ago=5)
    newer, newer_uid = _job(db, tmp_path, finished_s_ago=1)
    receiver.refuse.add(older_uid)  # the PACS refuses this one, again and again
    assert exporter.run_once() == 0
    head_id = _rows(db)[older].id
    with pytest.raises(outbox.OutboxError) as refused:
        outbox.requeue(db, head_id)
    assert refused.value.status == 409  # only a parked row can be requeued

    assert outbox.park(db, head_id).state == "parked"
    # the row it held back is due at once (not after the head's back-off) and lands
    assert exporter.run_once() == 1
    assert receiver.received == [newer_uid]
    rows = _rows(db)
    assert (rows[older].state, rows[newer].state) == (DeliveryState.PARKED, DeliveryState.SENT)
    with db.session() as s:
        states = {j.id: j.state for j in s.scalars(select(Job))}
    assert states == {older: JobState.SUCCEEDED, newer: JobState.DELIVERED}
    assert _destination_gauges(db)["cmb_destination_parked"] == {destination: 1.0}
    assert [d.id for d in outbox.list_deliveries(db, state=DeliveryState.PARKED)] == [head_id]
    with db.session() as s:  # a parked row is never tried, however due
        parked = s.get(Delivery, head_id)
        assert parked is not None
        parked.next_attempt_at = utcnow() - timedelta(hours=1)
    assert exporter.run_once() == 0
    assert receiver.received == [newer_uid]

    # the PACS is fixed: requeued, it is sent and its job is delivered
    receiver.refuse.clear()
    assert outbox.requeue(db, head_id).state == "pending"
    with pytest.raises(outbox.OutboxError) as sent:
        outbox.park(db, rows[newer].id)
    assert sent.value.status == 409  # a sent row cannot be parked
    assert exporter.run_once() == 1
    assert receiver.received == [newer_uid, older_uid]
    with db.session() as s:
        assert {j.state for j in s.scalars(select(Job))} == {JobState.DELIVERED}
    assert _destination_gauges(db)["cmb_destination_parked"] == {}
    with pytest.raises(outbox.OutboxError) as missing:
        outbox.park(db, head_id + 1000)
    assert missing.value.status == 404


def _destination_gauges(db: Database) -> dict[str, dict[str, float]]:
    """The per-destination outbox gauges of ``/metrics``: {metric: {destination: value}}."""
    wanted = (
        "cmb_destination_backlog",
        "cmb_destination_oldest_pending_seconds",
        "cmb_destination_parked",
    )
    return {
        m.name: {sample.labels["destination"]: sample.value for sample in m.samples}
        for m in DatabaseCollector(db).collect()
        if m.name in wanted
    }


def test_an_unreadable_result_file_holds_back_the_newer_ones(
    tmp_path: Path, db: Database, receiver: Receiver
) -> None:
    settings = _settings(tmp_path, receiver.port)
    exporter = Exporter(settings, db)
    older, _ = _job(db, tmp_path, finished_s_ago=5)
    newer, _ = _job(db, tmp_path, finished_s_ago=1)
    exporter.enqueue()
    rows = _rows(db)
    Path(rows[older].path).unlink()
    assert exporter.run_once() == 0
    assert receiver.received == []
    rows = _rows(db)
    assert "cannot read result file" in (rows[older].last_error or "")
    assert rows[newer].attempts == 0 and rows[newer].state == DeliveryState.PENDING


def test_destination_down_counts_an_attempt_for_every_row(tmp_path: Path, db: Database) -> None:
    settings = _settings(tmp_path, free_port())  # nobody listens there
    exporter = Exporter(settings, db)
    _job(db, tmp_path, finished_s_ago=5)
    _job(db, tmp_path, finished_s_ago=1)
    assert exporter.run_once() == 0
    rows = list(_rows(db).values())
    assert [r.attempts for r in rows] == [1, 1]
    errors = [r.last_error or "" for r in rows]
    assert all(e.startswith("cannot connect") or "rejected or aborted" in e for e in errors)
