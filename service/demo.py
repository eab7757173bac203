"""The whole service path on one machine, for `cmb demo` and first-time users.

`run_local` starts `cmb serve`'s parts in-process on free loopback ports
(embedded worker, SQLite), starts a small receiving Storage SCP standing in for
the PACS, sends a study folder by C-STORE, waits until the results have been
delivered to that stand-in, and returns where everything is.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from service.db.models import Job, JobState
from service.runtime import Service
from service.scu import associate
from service.settings import load_settings

log = logging.getLogger(__name__)

#: What the stand-in PACS accepts: our outputs (SEG, Comprehensive 3D SR, PDF, SC).
RESULT_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.66.4",
    "1.2.840.10008.5.1.4.1.1.88.34",
    "1.2.840.10008.5.1.4.1.1.88.22",
    "1.2.840.10008.5.1.4.1.1.104.1",
    "1.2.840.10008.5.1.4.1.1.7",
)
PACS_AE, SENDER_AE = "CMB_DEMO_PACS", "CMB_DEMO"


@dataclass
class LocalRun:
    """What happened, and where to look."""

    job_id: str | None
    state: str
    reason: str | None
    summary: dict[str, Any]
    sent: int
    received: list[Path] = field(default_factory=list)
    api_url: str = ""
    api_key: str = ""
    data_dir: Path = Path()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def send_folder(folder: Path, port: int, called_ae: str, calling_ae: str = SENDER_AE) -> int:
    """C-STORE every DICOM file under ``folder``; returns how many were stored."""
    datasets = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            datasets.append(dcmread(path))
        except (InvalidDicomError, OSError):
            continue
    ae = AE(ae_title=calling_ae)
    for sop_class, ts in {
        (str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets
    }:
        ae.add_requested_context(sop_class, [ts])
    assoc = associate(ae, "127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        raise ConnectionError(f"association with {called_ae} on port {port} failed")
    stored = 0
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            stored += int(getattr(status, "Status", -1) == 0)
    finally:
        assoc.release()
    return stored


def _receiver(folder: Path, port: int) -> Any:
    folder.mkdir(parents=True, exist_ok=True)

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        ds.save_as(folder / f"{ds.Modality}_{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        return 0x0000

    ae = AE(ae_title=PACS_AE)
    ae.add_supported_context(Verification)
    for uid in RESULT_SOP_CLASSES:
        ae.add_supported_context(uid)
    return ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )


def run_local(
    study_dir: Path,
    data_dir: Path,
    *,
    model_path: Path | None = None,
    location: str = "auto",
    timeout_s: float = 600.0,
    progress: Callable[[str], None] = print,
    keep_serving: Callable[[LocalRun], None] | None = None,
) -> LocalRun:
    """Send ``study_dir`` through a local service; ``keep_serving`` runs before shutdown."""
    dest_port = free_port()
    receiver = _receiver(data_dir / "received", dest_port)
    settings = load_settings(
        data_dir=data_dir,
        dicom_host="127.0.0.1",
        dicom_port=free_port(),
        api_port=free_port(),
        stable_after=2.0,
        poll_interval_s=0.25,
        destinations=[f"{PACS_AE}@127.0.0.1:{dest_port}"],
        allow_ae=[SENDER_AE],
        model_path=model_path,
        location=location,
        log_format="text",
        log_level="WARNING",
    )
    service = Service(settings)
    try:
        service.start()
        st = service.settings
        progress(
            f"service: DICOM {st.ae_title}@127.0.0.1:{st.dicom_port}, "
            f"API http://127.0.0.1:{st.api_port}, stand-in PACS {PACS_AE}@127.0.0.1:{dest_port}"
        )
        sent = send_folder(study_dir, st.dicom_port, st.ae_title)
        progress(
            f"sent {sent} instances by C-STORE; waiting {st.stable_after:g} s for the study "
            "to be stable, then for the job and the delivery ..."
        )
        run = _wait(service, sent, timeout_s)
        run.received = sorted((data_dir / "received").glob("*.dcm"))
        run.api_url = f"http://127.0.0.1:{st.api_port}"
        run.api_key = st.api_keys[0].split(":", 1)[1]
        run.data_dir = data_dir
        if keep_serving is not None:
            keep_serving(run)
        return run
    finally:
        service.stop()
        receiver.shutdown()


def _wait(service: Service, sent: int, timeout_s: float) -> LocalRun:
    if service.db is None:
        raise RuntimeError("the service is not started")
    deadline = time.monotonic() + timeout_s
    while True:
        with service.db.session() as s:
            job = s.scalars(select(Job).order_by(Job.created_at.desc()).limit(1)).first()
        done = job is not None and job.state in (JobState.DELIVERED, JobState.FAILED)
        if done or time.monotonic() > deadline:
            if job is None:
                return LocalRun(None, "no job", "no job was created in time", {}, sent)
            state = job.state.value if done else f"{job.state.value} (timed out)"
            return LocalRun(job.id, state, job.reason, job.summary or {}, sent)
        time.sleep(0.25)
