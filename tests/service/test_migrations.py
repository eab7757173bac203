"""Schema migrations: a database made by an earlier release is upgraded in place at start."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, inspect, text

from service.db.models import Base, Refusal, Study, utcnow
from service.db.session import Database, alembic_config


def test_a_0001_database_is_upgraded_at_start_and_keeps_its_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0001")  # what the first release created
    old = create_engine(url)
    with old.begin() as conn:
        assert "refusals" not in inspect(conn).get_table_names()
        conn.execute(
            text(
                "INSERT INTO studies (study_instance_uid, first_received_at, last_received_at,"
                " dirty) VALUES ('1.2.3', '2026-11-25 10:00:00', '2026-11-25 10:00:00', 1)"
            )
        )
    old.dispose()
    db = Database(url)  # cmb serve / cmb worker start: upgrade to head
    try:
        tables = set(inspect(db.engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        with db.session() as s:
            assert s.get(Study, "1.2.3") is not None
            s.add(
                Refusal(sop_instance_uid="1.2.3.4", study_instance_uid="1.2.3", refused_at=utcnow())
            )
        with db.session() as s:
            assert s.get(Refusal, "1.2.3.4") is not None
    finally:
        db.dispose()
    command.downgrade(alembic_config(url), "0001")  # and back, for a rollback of the release
    back = create_engine(url)
    assert "refusals" not in inspect(back).get_table_names()
    back.dispose()
