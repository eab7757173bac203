"""Fixtures of the service tests: free ports, settings on a temp data dir, real peers."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import create_engine, text

from service.db.models import Job, JobState, utcnow
from service.db.session import Database
from service.runtime import Service
from service.settings import Settings, load_settings
from service.store import Spool
from tests.service.dicom_factory import mr_dataset

FAKE_PIPELINE = "tests.service.fake_pipeline:process"
API_KEY = "tester:0123456789abcdef0123"
KEY = API_KEY.split(":", 1)[1]
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``predicate`` until truthy; fail the test with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@pytest.fixture
def services() -> Iterator[Callable[[Settings], Service]]:
    """Start in-process services (`cmb serve` as an object); all are stopped at teardown."""
    started: list[Service] = []

    def start(settings: Settings) -> Service:
        svc = Service(settings)
        started.append(svc)
        svc.start()
        return svc

    yield start
    for svc in reversed(started):
        svc.stop()


def quick_settings(tmp_path: Path, **kw: Any) -> Settings:
    """Settings for a service under test: data below ``tmp_path``, a free DICOM port, the fake
    pipeline, and short waits and back-offs so that tests do not sit idle (``kw`` wins)."""
    base: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "dicom_host": "127.0.0.1",
        "dicom_port": free_port(),
        "api_port": 0,
        "stable_after": 0.5,
        "poll_interval_s": 0.1,
        "disk_reserve_mb": 0,
        "pipeline": FAKE_PIPELINE,
        "api_keys": [API_KEY],
        "log_format": "text",
        "export_backoff_s": 0.2,
        "export_max_backoff_s": 1.0,
        "job_retry_backoff_s": 0.1,
        "dimse_timeout_s": 10,
    }
    return load_settings(**{**base, **kw})


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    return functools.partial(quick_settings, tmp_path)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'test.db'}")
    yield database
    database.dispose()


def add_succeeded_job(db: Database, folder: Path, **fields: Any) -> tuple[str, str]:
    """A succeeded job whose one result (an SR, in fact an MR image) waits to be sent:
    returns (job id, the result's SOP Instance UID); ``fields`` set more Job columns."""
    ds = mr_dataset(generate_uid(), generate_uid(), 0)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    now = utcnow()
    job_id = uuid.uuid4().hex
    with db.session() as s:
        s.add(
            Job(
                id=job_id,
                study_instance_uid=ds.StudyInstanceUID,
                content_key="k",
                n_instances=1,
                state=JobState.SUCCEEDED,
                attempts=1,
                created_at=now,
                updated_at=now,
                outputs={"sr": str(path)},
                **fields,
            )
        )
    return job_id, str(ds.SOPInstanceUID)


@pytest.fixture
def spool(tmp_path: Path, db: Database) -> Spool:
    return Spool(tmp_path / "spool", db, reserve_bytes=0)


class Proc:
    """A subprocess killed (whole process group) at teardown."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(
            args,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
        self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(args, log, env)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def storescp(tmp_path: Path, procs: Callable[..., Proc]) -> tuple[str, Path]:
    """A dcmtk storescp destination: ('DEST@127.0.0.1:PORT', folder it writes to)."""
    if shutil.which("storescp") is None:
        pytest.skip("dcmtk storescp is not installed")
    port = free_port()
    out = tmp_path / "dest"
    out.mkdir()
    procs(["storescp", "-aet", "DEST", "-od", str(out), str(port)], tmp_path / "storescp.log")
    wait_for(lambda: _listening(port), 10, "storescp to listen")
    return f"DEST@127.0.0.1:{port}", out


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


PG_ADMIN = os.environ.get("CMB_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL (dropped afterwards); skips without one."""
    name = f"cmb_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # no server on this machine
        admin.dispose()
        pytest.skip(f"PostgreSQL at {PG_ADMIN} unavailable: {type(e).__name__}")
    yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
