"""Engine, sessions and schema migrations (Alembic) for SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine with the settings each backend needs for a multi-threaded service."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL lets the API read while the SCP writes; FULL: a committed row survives power loss.
            mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()
            record.info[_WAL] = bool(mode) and str(mode[0]).lower() == "wal"
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "checkin")
        def _restore_full(dbapi_conn: Any, record: Any) -> None:
            # A connection that ran a relaxed commit goes back to the pool durable again.
            if record.info.pop(_RELAXED, False) and dbapi_conn is not None:
                dbapi_conn.execute("PRAGMA synchronous=FULL")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


_RELAXED = "cmb_synchronous_relaxed"
_WAL = "cmb_wal"


def relax_commit(conn: Connection) -> bool:
    """Let this transaction's commit return before its log is flushed to disk, where safe.

    Only for rows that can be rebuilt from data that is already durable (the
    spool's new-instance rows, re-indexed from their fsynced files by
    `service.store.Spool.reindex` when the service starts; docs/reliability.md,
    "Durability of ingest").  SQLite in WAL mode: ``synchronous=NORMAL`` for
    this connection until it returns to the pool.  A crash of the process loses
    nothing (the WAL is in the OS's cache); a crash of the machine may lose the
    last such commits, never a part of one and never an earlier one (the WAL is
    sequential: any later durable commit, a job or an export, makes every
    earlier relaxed one durable too), and the service restarts with the
    machine, so the reindex runs before anything is received.

    Returns False, and changes nothing, where that argument does not hold:
    PostgreSQL (its ``synchronous_commit = off`` loses commits when the
    database server alone crashes, under a service that keeps running and
    would not re-index until its own restart); SQLite not in WAL mode
    (``synchronous=NORMAL`` with a rollback journal may corrupt on power
    loss); a SQLite transaction already open (the setting cannot change
    inside one).
    """
    if conn.dialect.name != "sqlite":
        return False
    dbapi = conn.connection.dbapi_connection
    if not conn.info.get(_WAL) or dbapi is None or getattr(dbapi, "in_transaction", True):
        return False
    conn.info[_RELAXED] = True
    conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
    return True


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe from several processes)."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Serialise concurrent upgrades (cmb serve and cmb worker starting together).
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7243001)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Database:
    """The engine and a session factory; `session()` commits on success, rolls back on error."""

    def __init__(self, url: str, *, migrate_schema: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if migrate_schema:
            migrate(self.engine)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        s = self._factory()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def dispose(self) -> None:
        self.engine.dispose()
