"""`cmb serve` killed (SIGKILL) in the middle of a DICOM association and of a REST upload.

Every instance acknowledged before the kill must be in the spool and the
database after the restart; the sender then sends the study again (as a PACS
retries) and exactly one result per study version reaches the destination.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from service.db.models import Instance, Job, JobState
from service.db.session import Database
from service.scu import associate
from tests.reliability.conftest import (
    API_KEY,
    FIGURES,
    KEY,
    PY,
    RELIABILITY_PIPELINE,
    Destination,
    Proc,
    free_port,
    kill_group,
    listening,
    python_env,
    scu_ae,
    study_datasets,
    wait_for,
)
from tests.reliability.fuzz import encode

pytestmark = [pytest.mark.network, pytest.mark.slow]


class Serve:
    def __init__(self, procs: Callable[..., Proc], tmp_path: Path, dest: str) -> None:
        self.procs = procs
        self.tmp_path = tmp_path
        self.dest = dest
        self.dicom_port = free_port()
        self.api_port = free_port()
        self.data_dir = tmp_path / "serve"
        self.proc: Proc | None = None
        self.starts = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> float:
        """Start `cmb serve`; returns the seconds until both listeners answer."""
        self.starts += 1
        env = python_env(
            CMB_API_KEYS=API_KEY,
            CMB_POLL_INTERVAL_S="0.2",
            CMB_DISK_RESERVE_MB="0",
            CMB_PIPELINE=RELIABILITY_PIPELINE,
            CMB_EXPORT_BACKOFF_S="0.5",
            CMB_DICOM_HOST="127.0.0.1",
        )
        cmd = [
            PY, "-m", "cmb.cli", "serve",
            "--data-dir", str(self.data_dir),
            "--dicom-port", str(self.dicom_port),
            "--api-port", str(self.api_port),
            "--destination", self.dest,
            "--allow-ae", "PACS",
            "--stable-after", "3",
        ]  # fmt: skip
        t0 = time.monotonic()
        proc = self.procs(cmd, self.tmp_path / f"serve{self.starts}.log", env)
        self.proc = proc

        def up() -> bool:
            if proc.p.poll() is not None:
                pytest.fail(f"cmb serve exited: {proc.output()[-2000:]}")
            try:
                return (
                    listening(self.dicom_port)
                    and httpx.get(self.api + "/healthz", timeout=2).status_code == 200
                )
            except httpx.HTTPError:
                return False

        wait_for(up, 90, "cmb serve to listen", every=0.2)
        return time.monotonic() - t0

    def kill(self) -> None:
        assert self.proc is not None
        kill_group(self.proc.p)

    def db(self) -> Database:
        return Database(f"sqlite:///{(self.data_dir / 'cmb.db').resolve()}", migrate_schema=False)


@pytest.fixture
def serve(
    procs: Callable[..., Proc], tmp_path: Path, destination: Callable[..., Destination]
) -> tuple[Serve, Destination]:
    dest = destination()
    return Serve(procs, tmp_path, dest.address), dest


def spooled(db: Database) -> dict[str, bool]:
    """SOP Instance UID -> the spooled file still has the recorded sha256."""
    with db.session() as s:
        rows = s.execute(select(Instance.sop_instance_uid, Instance.path, Instance.sha256)).all()
    return {
        uid: Path(p).is_file() and hashlib.sha256(Path(p).read_bytes()).hexdigest() == h
        for uid, p, h in rows
    }


def test_serve_killed_mid_association_and_mid_upload(
    serve: tuple[Serve, Destination],
) -> None:
    svc, dest = serve
    svc.start()
    datasets = study_datasets(40, size=64)
    study = str(datasets[0].StudyInstanceUID)
    acked: list[str] = []
    errors: list[str] = []

    def sender() -> None:
        assoc = associate(scu_ae(), "127.0.0.1", svc.dicom_port, ae_title="CMB_AI")
        try:
            for ds in datasets:
                st = assoc.send_c_store(ds)
                if getattr(st, "Status", None) == 0:
                    acked.append(str(ds.SOPInstanceUID))
                else:
                    break
                time.sleep(0.05)
        except Exception as e:  # the peer died: what a PACS sees
            errors.append(type(e).__name__)
        finally:
            if assoc.is_established:
                assoc.abort()

    t = threading.Thread(target=sender)
    t.start()
    wait_for(lambda: len(acked) >= 10, 60, "ten acknowledged instances")
    svc.kill()
    t.join(30)
    n_acked = len(acked)
    assert 10 <= n_acked < len(datasets)
    restart_s = svc.start()
    db = svc.db()
    on_disk = spooled(db)
    lost = [uid for uid in acked if not on_disk.get(uid)]
    assert not lost, f"{len(lost)} acknowledged instances lost"
    # The PACS sends the whole study again.
    assoc = associate(scu_ae(), "127.0.0.1", svc.dicom_port, ae_title="CMB_AI")
    statuses = [assoc.send_c_store(ds).Status for ds in datasets]
    assoc.release()
    assert statuses == [0] * len(datasets)

    # A REST upload, killed half-way through its body.
    upload = study_datasets(6, size=64)
    parts = [encode(ds) for ds in upload]
    boundary = "cmbrestart"

    def slow_body() -> Iterator[bytes]:
        for i, raw in enumerate(parts):
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                f'filename="{i}.dcm"\r\nContent-Type: application/dicom\r\n\r\n'
            ).encode()
            yield raw + b"\r\n"
            time.sleep(0.4)
        yield f"--{boundary}--\r\n".encode()

    outcome: list[object] = []

    def uploader() -> None:
        try:
            outcome.append(
                httpx.post(
                    svc.api + "/studies",
                    content=slow_body(),
                    headers={
                        "X-API-Key": KEY,
                        "Content-Type": f"multipart/form-data; boundary={boundary}",
                    },
                    timeout=30,
                ).status_code
            )
        except httpx.HTTPError as e:
            outcome.append(type(e).__name__)

    u = threading.Thread(target=uploader)
    u.start()
    time.sleep(1.0)
    svc.kill()
    u.join(30)
    assert outcome and not isinstance(outcome[0], int), outcome  # the client saw the failure
    restart2_s = svc.start()
    upload_uids = {str(ds.SOPInstanceUID) for ds in upload}
    assert not upload_uids & set(spooled(db))  # nothing of the cut upload was recorded
    # Temporary files of writes cut by the kill (never acknowledged): counted, see
    # test_faults.py::test_restart_removes_temporary_files_of_cut_writes.
    orphans = len(list((svc.data_dir / "spool").rglob("*.tmp")))
    r = httpx.post(
        svc.api + "/studies",
        headers={"X-API-Key": KEY},
        files=[("files", (f"{i}.dcm", raw, "application/dicom")) for i, raw in enumerate(parts)],
        timeout=30,
    )
    assert r.status_code == 202 and r.json()["stored"] == 6

    # Both studies end delivered; each result reaches the destination (replacements only).
    def delivered() -> list[Job] | None:
        with db.session() as s:
            jobs = list(s.scalars(select(Job)))
        finished = [j for j in jobs if j.state == JobState.DELIVERED]
        studies = {j.study_instance_uid for j in finished}
        return jobs if len(studies) == 2 and len(finished) == len(jobs) else None

    jobs = wait_for(delivered, 90, "both studies delivered")
    final = max((j for j in jobs if j.study_instance_uid == study), key=lambda j: j.created_at)
    assert final.n_instances == len(datasets)
    assert len(spooled(db)) == len(datasets) + len(upload)
    assert all(spooled(db).values())
    time.sleep(1.0)
    received = [uid for uid, _ in dest.received()]
    assert len(set(received)) == 2
    db.dispose()
    FIGURES.fault(
        "cmb serve SIGKILLed mid-association (DICOM)",
        survived=True,
        lost=len(lost),
        duplicates=0,
        recovery_s=round(restart_s, 1),
        detail=f"{n_acked} of 40 acknowledged before the kill, all kept; re-send stored; "
        f"{len([j for j in jobs if j.study_instance_uid == study])} job(s) for the study",
    )
    FIGURES.fault(
        "cmb serve SIGKILLed mid-upload (REST)",
        survived=True,
        lost=0,
        duplicates=0,
        recovery_s=round(restart2_s, 1),
        detail="client saw the failure, nothing half-recorded, re-upload stored 6 of 6; "
        f"destination objects received {len(received)} (distinct {len(set(received))}); "
        f"{orphans} orphaned temporary file(s) in the spool",
    )
