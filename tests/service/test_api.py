"""The REST API in-process (FastAPI TestClient): auth, upload, jobs, results, health, audit."""

from __future__ import annotations

import io
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service import jobs
from service.api.app import create_app
from service.db.models import AuditEntry, Delivery, DeliveryState, JobState, utcnow
from service.db.session import Database
from service.settings import Settings
from service.store import Spool
from tests.service.conftest import KEY
from tests.service.dicom_factory import write_study


@pytest.fixture
def api(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[tuple[TestClient, Settings, Database]]:
    settings = make_settings()
    db = Database(settings.db_url)
    spool = Spool(settings.spool_dir, db, 0)
    with TestClient(create_app(settings, db, spool)) as client:
        yield client, settings, db
    db.dispose()


H = {"X-API-Key": KEY}


def _run_queued(settings: Settings, db: Database, job_id: str) -> None:
    spec = jobs.claim(db, settings, job_id, "test")
    assert spec is not None
    jobs.finish_success(db, settings, job_id, jobs.run_pipeline(spec, settings.pipeline))


@pytest.mark.parametrize(
    "headers", [{}, {"X-API-Key": "wrong-key-wrong-key"}, {"Authorization": "Bearer nope"}]
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/jobs"),
        ("get", "/jobs/x"),
        ("get", "/jobs/x/results/sr"),
        ("post", "/studies"),
        ("post", "/dicomweb/studies"),
        ("get", "/ui"),
        ("get", "/audit"),
        ("get", "/ui/jobs/x"),
        ("get", "/deliveries"),
        ("post", "/deliveries/1/park"),
        ("post", "/deliveries/1/requeue"),
    ],
)
def test_data_routes_refuse_missing_or_wrong_key(
    api: tuple, headers: dict[str, str], method: str, path: str
) -> None:
    client, _s, _db = api
    r = getattr(client, method)(path, headers=headers)
    assert r.status_code == 401
    assert "API key" in r.json()["detail"]


def test_health_and_metrics_are_open(api: tuple) -> None:
    client, _s, _db = api
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    m = client.get("/metrics").text
    assert "cmb_instances_received_total" in m or "cmb_jobs" in m
    assert client.get("/openapi.json").json()["info"]["title"] == "CMB detection service"


def test_upload_files_and_zip_then_status_and_download(api: tuple, tmp_path: Path) -> None:
    client, settings, db = api
    study, files = write_study(tmp_path / "a", n=3)
    r = client.post(
        "/studies",
        headers=H,
        files=[("files", (p.name, p.read_bytes(), "application/dicom")) for p in files]
        + [("files", ("notes.txt", b"not dicom", "text/plain"))],
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["stored"] == 3
    assert body["refused"][0]["file"] == "notes.txt"
    job_id = body["studies"][0]["job_id"]
    assert body["studies"][0]["study_instance_uid"] == study

    st = client.get(f"/jobs/{job_id}", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert st["state"] == "queued"
    _run_queued(settings, db, job_id)
    st = client.get(f"/jobs/{job_id}", headers=H).json()
    assert st["state"] == "succeeded"
    assert st["summary"]["n_detections"] == 2
    assert st["results"] == ["detections", "sr"]
    det = client.get(f"/jobs/{job_id}/results/detections", headers=H).json()
    assert det["study_instance_uid"] == study
    sr = client.get(f"/jobs/{job_id}/results/sr", headers=H)
    assert sr.status_code == 200
    assert sr.headers["content-type"] == "application/dicom"
    assert client.get(f"/jobs/{job_id}/results/seg", headers=H).status_code == 404

    # A zip of a second study.
    study2, files2 = write_study(tmp_path / "b", n=2)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in files2:
            zf.write(p, f"dir/{p.name}")
    r = client.post(
        "/studies", headers=H, files=[("files", ("s.zip", buf.getvalue(), "application/zip"))]
    )
    assert r.status_code == 202
    assert r.json()["stored"] == 2

    listing = client.get("/jobs", headers=H, params={"state": "queued"}).json()["jobs"]
    assert [j["study_instance_uid"] for j in listing] == [study2]
    listing = client.get("/jobs", headers=H, params={"since": "2000-01-01T00:00:00"}).json()
    assert len(listing["jobs"]) == 2
    assert (
        client.get("/jobs", headers=H, params={"until": "2000-01-01T00:00:00Z"}).json()["jobs"]
        == []
    )

    with db.session() as s:
        audit = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert {a.principal for a in audit} == {"tester"}
    assert any(a.path.endswith("/results/sr") and a.status == 200 for a in audit)
    entries = client.get("/audit", headers=H).json()["entries"]
    assert entries[0]["path"].endswith("/jobs")  # newest first (this request is logged after)
    assert len(entries) == len(audit)


def test_failed_job_reason_is_visible(api: tuple, tmp_path: Path) -> None:
    client, settings, db = api
    _study, files = write_study(tmp_path / "a", n=1, descriptions=("FAIL_CMB",))
    r = client.post(
        "/studies", headers=H, files=[("files", (files[0].name, files[0].read_bytes()))]
    )
    job_id = r.json()["studies"][0]["job_id"]
    spec = jobs.claim(db, settings, job_id, "test")
    assert spec is not None
    with pytest.raises(jobs.JobFailedError) as e:
        jobs.run_pipeline(spec, settings.pipeline)
    jobs.finish_failure(db, settings, job_id, str(e.value), terminal=True)
    st = client.get(f"/jobs/{job_id}", headers=H).json()
    assert st["state"] == JobState.FAILED.value
    assert st["reason"] == "NoUsableSeriesError: no SWI or T2* magnitude series in the study"

    # A re-run on request; a second request while it waits is a conflict.
    assert client.post(f"/jobs/{job_id}/retry").status_code == 401
    r = client.post(f"/jobs/{job_id}/retry", headers=H)
    assert r.status_code == 202
    st = client.get(f"/jobs/{job_id}", headers=H).json()
    assert (st["state"], st["attempts"], st["reason"]) == (
        "queued",
        0,
        "re-run requested by tester",
    )
    assert client.post(f"/jobs/{job_id}/retry", headers=H).status_code == 409


def test_nothing_storable_is_a_400(api: tuple) -> None:
    client, _s, _db = api
    r = client.post("/studies", headers=H, files=[("files", ("x.dcm", b"garbage" * 40))])
    assert r.status_code == 400
    assert "not a DICOM file" in r.json()["refused"][0]["reason"]


def test_disk_below_reserve_is_507(api: tuple, tmp_path: Path) -> None:
    client, settings, _db = api
    spool: Spool = client.app.state.spool
    spool.reserve_bytes = shutil.disk_usage(settings.data_dir).total * 2
    _study, files = write_study(tmp_path / "a", n=1)
    r = client.post(
        "/studies", headers=H, files=[("files", (files[0].name, files[0].read_bytes()))]
    )
    assert r.status_code == 507
    assert "below the reserve" in r.json()["detail"]


def test_an_operator_parks_and_requeues_a_stuck_result(api: tuple, tmp_path: Path) -> None:
    client, settings, db = api
    _study, files = write_study(tmp_path / "a", n=2)
    r = client.post(
        "/studies",
        headers=H,
        files=[("files", (p.name, p.read_bytes(), "application/dicom")) for p in files],
    )
    job_id = r.json()["studies"][0]["job_id"]
    _run_queued(settings, db, job_id)
    with db.session() as s:
        for destination in ("PACS@127.0.0.1:11112", "ARCHIVE@127.0.0.1:11113"):
            s.add(
                Delivery(
                    job_id=job_id,
                    destination=destination,
                    kind="sr",
                    path="unused",
                    state=DeliveryState.PENDING,
                    attempts=4,
                    last_error="C-STORE status 0xC000",
                    next_attempt_at=utcnow(),
                )
            )
    listed = client.get("/deliveries", headers=H).json()["deliveries"]
    assert [d["destination"] for d in listed] == ["PACS@127.0.0.1:11112", "ARCHIVE@127.0.0.1:11113"]
    head = client.get(
        "/deliveries", headers=H, params={"destination": "PACS@127.0.0.1:11112"}
    ).json()["deliveries"]
    assert len(head) == 1 and head[0]["last_error"] == "C-STORE status 0xC000"
    did = head[0]["id"]

    parked = client.post(f"/deliveries/{did}/park", headers=H)
    assert parked.status_code == 200, parked.text
    assert parked.json()["state"] == "parked"
    again = client.post(f"/deliveries/{did}/park", headers=H)
    assert again.status_code == 409 and "not pending" in again.json()["detail"]
    job = client.get(f"/jobs/{job_id}", headers=H).json()
    assert job["state"] == "succeeded"  # not delivered: the parked result is still owed
    assert {(d["id"], d["state"]) for d in job["deliveries"]} >= {(did, "parked")}
    only_parked = client.get("/deliveries", headers=H, params={"state": "parked"}).json()
    assert [d["id"] for d in only_parked["deliveries"]] == [did]
    assert client.get(f"/jobs/{job_id}/results/sr", headers=H).status_code == 200
    page = client.get(f"/ui/jobs/{job_id}", headers=H).text  # the job page shows it too
    assert "<h2>Sent to</h2>" in page
    assert "<td class='parked'>parked</td>" in page and "C-STORE status 0xC000" in page

    requeued = client.post(f"/deliveries/{did}/requeue", headers=H)
    assert requeued.status_code == 200 and requeued.json()["state"] == "pending"
    assert client.post(f"/deliveries/{did}/requeue", headers=H).status_code == 409
    assert client.post("/deliveries/999999/park", headers=H).status_code == 404
    for beyond in (0, 2**31, 2**63):  # no such row can exist: refused, not a database error
        for action in ("park", "requeue"):
            r = client.post(f"/deliveries/{beyond}/{action}", headers=H)
            assert r.status_code == 422, (beyond, action, r.text)
    with db.session() as s:  # who did it is in the audit log
        paths = [a.path for a in s.scalars(select(AuditEntry)) if a.method == "POST"]
    assert f"/deliveries/{did}/park" in paths and f"/deliveries/{did}/requeue" in paths
