"""1,000 broken DICOM files through the Storage SCP and 1,000 through REST upload.

Each must get a clear answer (a DIMSE status; HTTP 202 with the file listed as
stored or refused with a reason, or 400), the association and the process
must live on, memory must stay bounded, and every accepted instance must be in
the spool.  The jobs created for what was accepted are then run through the
real pipeline (the small test model): each must end ``succeeded`` or
``failed`` with a reason that names a model.errors class, never an unexplained
crash.
"""

from __future__ import annotations

import collections
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pynetdicom import AE, _config
from pynetdicom.association import Association
from sqlalchemy import select

from service import jobs
from service.api.app import create_app
from service.db.models import Instance, Job, JobState
from service.db.session import Database
from service.runtime import Service
from service.scu import associate
from service.settings import Settings
from service.store import Spool
from tests.reliability.conftest import FIGURES, KEY, scu_ae
from tests.reliability.fuzz import make_cases
from tests.service.study_factory import write_model

pytestmark = pytest.mark.network

N_CASES = 1000
STUDY = "2.25.424242"
RSS_GROWTH_LIMIT_MB = 200.0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def connect(ae: AE, port: int) -> Association:
    """Associate with TCP_NODELAY on our side (no 40 ms delayed-ACK stall per C-STORE)."""
    assoc = associate(ae, "127.0.0.1", port, ae_title="CMB_AI")
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return assoc


def test_fuzzed_instances_through_the_scp(
    services: Callable[[Settings], Service],
    make_settings: Callable[..., Settings],
    fast_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A long DIMSE timeout: on a loaded machine a slow answer is not a missing one.
    svc = services(make_settings(data_dir=fast_dir / "data", stable_after=3600, dimse_timeout_s=60))
    port = svc.dicom_port
    assert port is not None
    warnings.simplefilter("ignore")
    cases = make_cases(N_CASES, seed=11, study_uid=STUDY, dimse=True)
    files = fast_dir / "cases"
    files.mkdir()
    paths = []
    for i, case in enumerate(cases):
        p = files / f"{i:04d}.dcm"
        p.write_bytes(case.raw)
        paths.append(p)
    # Send each file's bytes as they are (no decoding and re-encoding by the sender).
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = scu_ae()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    outcomes: collections.Counter[str] = collections.Counter()
    by_category: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    accepted: list[str] = []
    no_answer = []
    reconnects = 0
    assoc = connect(ae, port)
    first_try_lost: list[str] = []
    for i, (case, path) in enumerate(zip(cases, paths, strict=True)):
        status = None
        for attempt in range(2):  # a sender re-sends what got no answer, once
            if not assoc.is_established:
                reconnects += 1
                assoc = connect(ae, port)
                assert assoc.is_established, "the SCP stopped accepting associations"
            try:
                st = assoc.send_c_store(path, msg_id=(i * 2 + attempt) % 65535 + 1)
            except (ValueError, AttributeError) as e:  # the sender could not even offer it
                outcomes[f"not sendable: {type(e).__name__}"] += 1
                break
            status = getattr(st, "Status", None)
            if status is not None:
                break
            first_try_lost.append(case.category)
            if assoc.is_established:
                assoc.abort()
        label = "no answer" if status is None else f"0x{status:04X}"
        outcomes[label] += 1
        by_category[case.category][label] += 1
        if status is None:
            no_answer.append(case.category)
        elif status == 0:
            from pydicom.filereader import read_file_meta_info

            accepted.append(str(read_file_meta_info(path).MediaStorageSOPInstanceUID))
    if assoc.is_established:
        echo = assoc.send_c_echo()
        assert echo.Status == 0
        assoc.release()
    elapsed = time.perf_counter() - t0
    growth = rss_mb() - rss0
    assert svc.db is not None
    with svc.db.session() as s:
        stored = set(s.scalars(select(Instance.sop_instance_uid)).all())
    lost = [uid for uid in accepted if uid not in stored]
    FIGURES.input(
        "dicom_scp_fuzz",
        cases=len(cases),
        outcomes=dict(outcomes),
        by_category={k: dict(v) for k, v in by_category.items()},
        no_answer=len(no_answer),
        no_answer_first_try=first_try_lost,
        reconnects=reconnects,
        accepted=len(accepted),
        accepted_lost=len(lost),
        seconds=round(elapsed, 1),
        rss_growth_mb=round(growth, 1),
    )
    assert len(cases) >= 1000
    assert not no_answer, f"{len(no_answer)} cases got no DIMSE answer: {no_answer[:5]}"
    assert not lost, f"{len(lost)} acknowledged instances missing from the spool"
    assert growth < RSS_GROWTH_LIMIT_MB
    assert outcomes["0xC210"] + outcomes["0xA900"] > 0  # refusals really happened


@pytest.fixture
def api(make_settings: Callable[..., Settings], fast_dir: Path) -> tuple[TestClient, Database]:
    settings = make_settings(data_dir=fast_dir / "data", dicom_port=0)
    db = Database(settings.db_url)
    spool = Spool(settings.spool_dir, db, 0)
    return TestClient(create_app(settings, db, spool), raise_server_exceptions=False), db


def test_fuzzed_uploads_through_rest_then_jobs(
    api: tuple[TestClient, Database], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    client, db = api
    warnings.simplefilter("ignore")
    cases = make_cases(N_CASES, seed=12, study_uid=STUDY, dimse=False)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    codes: collections.Counter[int] = collections.Counter()
    unclear = []
    refused = stored = 0
    for i, case in enumerate(cases):
        r = client.post(
            "/studies",
            headers={"X-API-Key": KEY},
            files=[("files", (f"case{i}.dcm", case.raw, "application/dicom"))],
        )
        codes[r.status_code] += 1
        if r.status_code not in (202, 400):
            unclear.append((case.category, r.status_code, r.text[:200]))
            continue
        body = r.json()
        stored += body["stored"] + body["duplicates"]
        for item in body["refused"]:
            refused += 1
            if not item["reason"]:
                unclear.append((case.category, r.status_code, "refused without a reason"))
    elapsed = time.perf_counter() - t0
    growth = rss_mb() - rss0
    # The jobs for what was accepted: run them (in this process) through the real pipeline.
    settings = make_settings(
        data_dir=tmp_path / "jobs",
        dicom_port=0,
        model_path=write_model(tmp_path / "model.onnx"),
        device="cpu",
        threads=1,
    )
    with db.session() as s:
        queued = list(
            s.scalars(select(Job.id).where(Job.state == JobState.QUEUED).order_by(Job.created_at))
        )
    job_outcomes: collections.Counter[str] = collections.Counter()
    unexplained: list[str] = []
    for job_id in queued[:40]:
        spec = jobs.claim(db, settings, job_id, "fuzz")
        assert spec is not None
        try:
            report: dict[str, Any] = jobs.run_pipeline(spec, "model.pipeline:process")
        except jobs.JobFailedError as e:
            jobs.finish_failure(db, settings, job_id, str(e), terminal=True)
            job_outcomes[str(e).split(":", 1)[0]] += 1
        except Exception as e:  # what the worker would retry and fail without a clear reason
            jobs.finish_failure(db, settings, job_id, f"{type(e).__name__}: {e}", terminal=True)
            job_outcomes[f"unexplained {type(e).__name__}"] += 1
            unexplained.append(f"{type(e).__name__}: {str(e)[:150]}")
        else:
            jobs.finish_success(db, settings, job_id, report)
            job_outcomes["succeeded"] += 1
    with db.session() as s:
        reasonless = s.scalars(
            select(Job.id).where(Job.state == JobState.FAILED, Job.reason.is_(None))
        ).all()
    FIGURES.input(
        "rest_upload_fuzz",
        cases=len(cases),
        http_codes={str(k): v for k, v in codes.items()},
        files_stored=stored,
        files_refused_with_reason=refused,
        unclear=len(unclear),
        seconds=round(elapsed, 1),
        rss_growth_mb=round(growth, 1),
        jobs_queued=len(queued),
        jobs_run=min(len(queued), 40),
        job_outcomes=dict(job_outcomes),
        unexplained=unexplained[:5],
        http_500=[u[0] for u in unclear][:10],
    )
    assert len(cases) >= 1000
    assert not unclear, unclear[:5]
    assert refused > 0
    assert growth < RSS_GROWTH_LIMIT_MB
    assert not reasonless
    assert not unexplained, unexplained[:5]
