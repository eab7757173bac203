"""The whole path in one process: SCP -> spool + DB -> stable -> job -> pipeline -> outbox."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from service.db.models import Delivery, DeliveryState, Job, JobState
from service.runtime import Service
from service.settings import Settings
from tests.helpers.dcmtk import send
from tests.service.conftest import wait_for
from tests.service.dicom_factory import write_study

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed"),
]


def _jobs(svc: Service, study: str) -> list[Job]:
    assert svc.db is not None
    with svc.db.session() as s:
        return list(s.scalars(select(Job).where(Job.study_instance_uid == study)))


def test_study_flows_to_destination(
    services: Callable[[Settings], Service],
    make_settings: Callable[..., Settings],
    storescp: tuple[str, Path],
    tmp_path: Path,
) -> None:
    dest, dest_dir = storescp
    svc = services(make_settings(destinations=[dest]))
    study, _files = write_study(tmp_path / "in", n=3, descriptions=("SWI", "PHASE"))
    send(tmp_path / "in", svc.settings.dicom_port)

    job = wait_for(
        lambda: next((j for j in _jobs(svc, study) if j.state == JobState.DELIVERED), None),
        60,
        "the job to be delivered",
    )
    assert job.summary["n_detections"] == 2
    assert job.attempts == 1
    received = [dcmread(p) for p in dest_dir.iterdir()]
    assert [ds.Modality for ds in received] == ["SR"]
    assert received[0].StudyInstanceUID == study

    # The same study again (duplicates): no new job.
    send(tmp_path / "in", svc.settings.dicom_port)
    svc.monitor.run_once()  # type: ignore[union-attr]
    assert len(_jobs(svc, study)) == 1

    # More of the study arrives: a new job, the old one's results stay.
    write_study(tmp_path / "more", n=2, study_uid=study, descriptions=("T1",))
    send(tmp_path / "more", svc.settings.dicom_port)
    jobs = wait_for(
        lambda: (
            [j for j in _jobs(svc, study) if j.state == JobState.DELIVERED]
            if len([j for j in _jobs(svc, study) if j.state == JobState.DELIVERED]) == 2
            else None
        ),
        60,
        "the second job to be delivered",
    )
    assert sorted(j.n_instances for j in jobs) == [6, 8]
    # Deterministic output UIDs: the destination holds one SR, replaced, not two.
    assert len(list(dest_dir.iterdir())) == 1


def test_destination_down_then_up_delivers(
    services: Callable[[Settings], Service],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    procs: Callable[..., object],
) -> None:
    from tests.service.conftest import _listening, free_port

    port = free_port()
    svc = services(make_settings(destinations=[f"LATE@127.0.0.1:{port}"]))
    study, _ = write_study(tmp_path / "in", n=2)
    send(tmp_path / "in", svc.settings.dicom_port)
    assert svc.db is not None

    def failed_attempts() -> int:
        with svc.db.session() as s:  # type: ignore[union-attr]
            rows = s.scalars(select(Delivery)).all()
            return sum(r.attempts for r in rows if r.state == DeliveryState.PENDING)

    wait_for(lambda: failed_attempts() >= 2, 60, "two failed delivery attempts")
    with svc.db.session() as s:
        d = s.scalars(select(Delivery)).one()
        assert d.last_error is not None
        assert "connect" in d.last_error.lower() or "rejected" in d.last_error
        job = s.get(Job, d.job_id)
        assert job is not None
        assert job.state == JobState.SUCCEEDED
    out = tmp_path / "late"
    out.mkdir()
    procs(["storescp", "-aet", "LATE", "-od", str(out), str(port)], tmp_path / "late.log")
    wait_for(lambda: _listening(port), 10, "late storescp")
    job = wait_for(
        lambda: next((j for j in _jobs(svc, study) if j.state == JobState.DELIVERED), None),
        30,
        "delivery after the destination came up",
    )
    assert job is not None
    assert len(list(out.iterdir())) == 1


def test_unusable_study_fails_with_reason_and_transient_fault_retries(
    services: Callable[[Settings], Service],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    svc = services(make_settings(job_max_retries=2))
    bad, _ = write_study(tmp_path / "bad", n=1, descriptions=("FAIL_CMB",))
    flaky, _ = write_study(tmp_path / "flaky", n=1, descriptions=("FAIL_TRANSIENT",))
    send(tmp_path / "bad", svc.settings.dicom_port)
    send(tmp_path / "flaky", svc.settings.dicom_port)
    job = wait_for(
        lambda: next((j for j in _jobs(svc, bad) if j.state == JobState.FAILED), None),
        60,
        "the unusable study to fail",
    )
    assert job.attempts == 1
    assert job.reason.startswith("NoUsableSeriesError: no SWI")
    job = wait_for(
        lambda: next((j for j in _jobs(svc, flaky) if j.state == JobState.FAILED), None),
        60,
        "the flaky study to fail after its retries",
    )
    assert job.attempts == 3
    assert "simulated transient fault" in job.reason


def test_restart_resumes_a_job_left_running(
    services: Callable[[Settings], Service],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    from service.db.session import Database
    from service.stability import create_job
    from service.store import Spool, parse_part10

    settings = make_settings()
    # A previous process stored a study, queued its job and died while running it.
    db = Database(settings.db_url)
    spool = Spool(settings.spool_dir, db, 0)
    study, files = write_study(tmp_path / "in", n=2)
    for f in files:
        raw = f.read_bytes()
        spool.store(raw, parse_part10(raw), "dimse:PACS")
    job_id = create_job(db, study)
    assert job_id is not None
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.state = JobState.RUNNING
        job.attempts = 1
    db.dispose()

    svc = services(settings)
    job = wait_for(
        lambda: next((j for j in _jobs(svc, study) if j.state == JobState.SUCCEEDED), None),
        60,
        "the orphaned job to run again after the restart",
    )
    assert job.id == job_id
    assert job.attempts == 2


def test_port_in_use_fails_at_start_with_a_clear_message(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    import socket
    import sys

    from tests.service.conftest import REPO

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flags in (
            ["--dicom-port", str(port), "--api-port", "0"],
            ["--dicom-port", "0", "--api-port", str(port)],
        ):
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cmb.cli",
                    "serve",
                    "--data-dir",
                    str(tmp_path / "d"),
                    *flags,
                ],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=REPO,
                check=False,
            )
            assert run.returncode == 1, run.stderr
            assert "cmb serve: cannot start" in run.stderr


def test_cli_refuses_bad_settings_with_what_to_fix(tmp_path: Path) -> None:
    import os
    import sys

    from tests.service.conftest import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("CMB_")}
    env["CMB_STABLE_AFTER"] = "soon"
    serve = subprocess.run(
        [sys.executable, "-m", "cmb.cli", "serve", "--destination", "PACS:104"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert serve.returncode == 2
    assert "stable_after (CMB_STABLE_AFTER)" in serve.stderr
    assert "must be written AET@HOST:PORT" in serve.stderr
    del env["CMB_STABLE_AFTER"]
    worker = subprocess.run(
        [sys.executable, "-m", "cmb.cli", "worker", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert worker.returncode == 2
    assert "no broker: set CMB_BROKER_URL" in worker.stderr
