"""Faults in one `cmb serve` (in-process): killed job process, destination down, disk full,
senders that abort, send in pieces or send again.  Each: nothing lost, nothing duplicated.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.api.app import create_app
from service.db.models import Delivery, Instance, Job, JobState
from service.runtime import Service
from service.settings import Settings
from tests.reliability.conftest import (
    FIGURES,
    KEY,
    LOGS,
    Destination,
    send,
    study_datasets,
    wait_for,
)
from tests.reliability.fuzz import encode

pytestmark = pytest.mark.network


def jobs_of(svc: Service, study: str | None = None) -> list[Job]:
    assert svc.db is not None
    with svc.db.session() as s:
        q = select(Job).order_by(Job.created_at)
        if study:
            q = q.where(Job.study_instance_uid == study)
        return list(s.scalars(q))


def deliveries(svc: Service) -> list[Delivery]:
    assert svc.db is not None
    with svc.db.session() as s:
        return list(s.scalars(select(Delivery).order_by(Delivery.id)))


def stored_uids(svc: Service) -> dict[str, str]:
    """SOP Instance UID -> sha256 of the spooled file, for every recorded instance."""
    assert svc.db is not None
    with svc.db.session() as s:
        rows = s.execute(select(Instance.sop_instance_uid, Instance.path, Instance.sha256)).all()
    out = {}
    for uid, path, digest in rows:
        data = Path(path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"spooled file of {uid} changed"
        out[uid] = digest
    return out


def test_job_process_killed_mid_inference_runs_again_and_delivers_once(
    services: Callable[[Settings], Service],
    make_settings: Callable[..., Settings],
    destination: Callable[..., Destination],
) -> None:
    dest = destination()
    svc = services(make_settings(destinations=[dest.address]))
    datasets = study_datasets(3, description="SLEEP_ONCE")
    study = str(datasets[0].StudyInstanceUID)
    assert send(svc.dicom_port or 0, datasets) == [0] * 3
    marker = svc.settings.results_dir / "slept-once"
    wait_for(marker.exists, 60, "the first (long) attempt to start")
    children = multiprocessing.active_children()
    assert len(children) == 1
    killed_at = time.monotonic()
    os.kill(children[0].pid or 0, signal.SIGKILL)
    job = wait_for(
        lambda: next((j for j in jobs_of(svc, study) if j.state == JobState.DELIVERED), None),
        60,
        "the job to run again and be delivered",
    )
    recovery = time.monotonic() - killed_at
    assert job.attempts == 2
    assert len(jobs_of(svc, study)) == 1
    wait_for(lambda: len(dest.received()) >= 1, 10, "the SR at the destination")
    time.sleep(1.0)  # a duplicate send would land within a poll or two
    received = [uid for uid, _ in dest.received()]
    assert len(received) == 1 == len(set(received))
    assert [d.attempts for d in deliveries(svc)] == [1]
    FIGURES.fault(
        "job process SIGKILLed mid-inference (embedded worker)",
        survived=True,
        lost=0,
        duplicates=len(received) - len(set(received)),
        recovery_s=round(recovery, 1),
        detail="job re-run (attempts 2), SR received once",
    )


@pytest.mark.slow
def test_destination_down_for_long_then_back(
    services: Callable[[Settings], Service],
    make_settings: Callable[..., Settings],
    destination: Callable[..., Destination],
) -> None:
    dest = destination(run=False)
    svc = services(
        make_settings(destinations=[dest.address], export_backoff_s=0.2, export_max_backoff_s=1.0)
    )
    studies = []
    for _ in range(3):
        ds = study_datasets(2)
        studies.append(str(ds[0].StudyInstanceUID))
        assert send(svc.dicom_port or 0, ds) == [0, 0]
    wait_for(
        lambda: len(d := deliveries(svc)) == 3 and min(x.attempts for x in d) >= 4,
        90,
        "every result to have failed four times",
    )
    down_for = 2.0
    time.sleep(down_for)
    up_at = time.monotonic()
    dest = destination(run=True)
    wait_for(
        lambda: all(j.state == JobState.DELIVERED for j in jobs_of(svc)) and len(jobs_of(svc)) == 3,
        30,
        "every result to land",
    )
    recovery = time.monotonic() - up_at
    time.sleep(1.0)
    received = [uid for uid, _ in dest.received()]
    assert len(received) == 3 == len(set(received))
    # Back-off: per result, the announced delays never shrink and stop at the cap.
    delays: dict[str, list[float]] = {}
    for rec in LOGS.records:
        if rec.getMessage().startswith("delivery failed") and getattr(rec, "job_id", None):
            delays.setdefault(rec.job_id, []).append(float(rec.args[0]))  # type: ignore[arg-type,index,attr-defined]
    ours = {j.id for j in jobs_of(svc)}
    delays = {k: v for k, v in delays.items() if k in ours}
    assert len(delays) == 3
    for seq in delays.values():
        assert seq == sorted(seq), seq
        assert seq[0] == pytest.approx(0.2) and max(seq) == pytest.approx(1.0)
    attempts = sum(d.attempts for d in deliveries(svc))
    FIGURES.fault(
        "destination PACS down, then back",
        survived=True,
        lost=3 - len(set(received)),
        duplicates=len(received) - len(set(received)),
        recovery_s=round(recovery, 1),
        detail=f"3 results, {attempts} send attempts, back-off 0.2 s doubling to 1 s",
    )


def test_results_land_in_order_of_completion(
    services: Callable[[Settings], Service],
    make_settings: Callable[..., Settings],
    destination: Callable[..., Destination],
) -> None:
    dest = destination(run=False)
    svc = services(
        make_settings(destinations=[dest.address], export_backoff_s=0.5, export_max_backoff_s=1.0)
    )
    first = study_datasets(2)
    assert send(svc.dicom_port or 0, first) == [0, 0]
    wait_for(lambda: (d := deliveries(svc)) and d[0].attempts >= 2, 60, "two failed sends")
    # The older result is now waiting out a long back-off (set directly, so that the test
    # does not depend on how fast this machine runs the second job).
    assert svc.db is not None
    with svc.db.session() as s:
        row = s.get(Delivery, deliveries(svc)[0].id)
        assert row is not None
        row.next_attempt_at = row.next_attempt_at + timedelta(seconds=60)
    destination(run=True)
    second = study_datasets(2)
    assert send(svc.dicom_port or 0, second) == [0, 0]
    wait_for(
        lambda: len(jobs_of(svc)) == 2 and jobs_of(svc)[1].state == JobState.DELIVERED,
        60,
        "the second result to land",
    )
    done = sorted(jobs_of(svc), key=lambda j: j.finished_at)  # type: ignore[arg-type,return-value]
    by_job = {d.job_id: d.delivered_at for d in deliveries(svc)}
    first_delivered = by_job[done[0].id]
    assert first_delivered is not None, "a newer result was delivered before an older one"
    assert first_delivered <= by_job[done[1].id]  # type: ignore[operator]


def test_restart_removes_temporary_files_of_cut_writes(
    services: Callable[[Settings], Service], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    cut = settings.spool_dir / "1.2.3" / "1.2.3.4" / ".1.2.3.4.5.dcm.0123abcd.tmp"
    cut.parent.mkdir(parents=True)
    cut.write_bytes(b"half an instance")
    services(settings)
    assert not cut.exists()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (root only); unmounted at teardown."""
    mnt = tmp_path / "data" / "spool"
    mnt.mkdir(parents=True)
    run = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {run.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path, leave_mb: float) -> Path:
    ballast = folder / "ballast"
    free = shutil.disk_usage(folder).free
    with open(ballast, "wb") as f:
        f.write(b"\0" * max(0, int(free - leave_mb * 2**20)))
    return ballast


def test_disk_full_on_the_spool(
    services: Callable[[Settings], Service],
    make_settings: Callable[..., Settings],
    small_fs: Path,
) -> None:
    svc = services(make_settings(disk_reserve_mb=1.0, stable_after=2.0))
    port = svc.dicom_port or 0
    ballast = _fill(small_fs, leave_mb=2.0)
    datasets = study_datasets(24, size=256)  # 128 KiB each: ~8 fit above the reserve
    statuses = send(port, datasets)
    acked = [str(ds.SOPInstanceUID) for ds, st in zip(datasets, statuses, strict=True) if st == 0]
    refused = [st for st in statuses if st != 0]
    assert acked and refused
    assert set(refused) == {0xA700}
    first_refusal = statuses.index(0xA700)
    assert all(st == 0 for st in statuses[:first_refusal])  # every success before it
    # A new association: refused too (C-ECHO still answers).
    assert send(port, datasets[-1:]) == [0xA700]
    assert svc.db is not None
    client = TestClient(create_app(svc.settings, svc.db, svc.spool))  # type: ignore[arg-type]
    r = client.post(
        "/studies",
        headers={"X-API-Key": KEY},
        files=[("files", ("x.dcm", encode(datasets[-1]), "application/dicom"))],
    )
    assert r.status_code == 507
    on_disk = stored_uids(svc)
    assert set(acked) <= set(on_disk)
    assert not [p for p in small_fs.rglob("*.tmp")]
    assert not jobs_of(svc)  # nothing ran on a half study
    # The sender retries only after the study's quiet time: still nothing runs on the half
    # that landed, the refused instances hold it (CMB_REFUSAL_HOLD_S, 30 min by default).
    time.sleep(svc.settings.stable_after + 3 * svc.settings.poll_interval_s)
    assert not jobs_of(svc)
    # Space returns: the sender retries what was refused; all of it lands, one job.
    ballast.unlink()
    freed_at = time.monotonic()
    assert send(port, datasets) == [0] * len(datasets)
    recovery = time.monotonic() - freed_at
    assert set(stored_uids(svc)) == {str(ds.SOPInstanceUID) for ds in datasets}
    job = wait_for(
        lambda: next((j for j in jobs_of(svc) if j.state == JobState.SUCCEEDED), None),
        60,
        "the job over the whole study",
    )
    assert job.n_instances == len(datasets)
    assert len(jobs_of(svc)) == 1
    FIGURES.fault(
        "disk full on the spool (8 MiB tmpfs)",
        survived=True,
        lost=len(set(acked) - set(on_disk)),
        duplicates=0,
        recovery_s=round(recovery, 2),
        detail=f"{len(acked)} stored, {len(refused)} refused with 0xA700, REST 507",
    )


def test_sender_aborts_sends_in_pieces_and_sends_again(
    services: Callable[[Settings], Service],
    make_settings: Callable[..., Settings],
    destination: Callable[..., Destination],
) -> None:
    stable = 2.0
    dest = destination()
    svc = services(make_settings(stable_after=stable, destinations=[dest.address]))
    port = svc.dicom_port or 0
    datasets = study_datasets(8)
    study = str(datasets[0].StudyInstanceUID)
    # 1. An association aborted after 3 instances.
    assert send(port, datasets[:5], abort_after=3) == [0, 0, 0]
    # 2. The rest in pieces, each within the stability window: no job may start meanwhile.
    seen_jobs = []
    for piece in (datasets[3:5], datasets[5:7], datasets[7:]):
        t_end = time.monotonic() + stable * 0.6
        while time.monotonic() < t_end:
            seen_jobs.extend(jobs_of(svc, study))
            time.sleep(0.1)
        assert send(port, piece) == [0] * len(piece)
    assert not seen_jobs, "a job started on a half study inside the stability window"
    job = wait_for(
        lambda: next((j for j in jobs_of(svc, study) if j.state == JobState.DELIVERED), None),
        30,
        "one job over the whole study",
    )
    assert job.n_instances == 8
    # 3. The same study again, twice: duplicates change nothing.
    for _ in range(2):
        assert send(port, datasets) == [0] * 8
    time.sleep(stable + 1.0)
    assert len(jobs_of(svc, study)) == 1
    assert len(stored_uids(svc)) == 8
    received = [uid for uid, _ in dest.received()]
    assert len(received) == 1
    FIGURES.fault(
        "sender aborts, sends in pieces, sends the study twice more",
        survived=True,
        lost=8 - len(stored_uids(svc)),
        duplicates=len(jobs_of(svc, study)) - 1 + len(received) - 1,
        recovery_s=None,
        detail="no job inside the stability window, one job over 8 instances, one SR",
    )
