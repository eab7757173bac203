"""`cmb serve --role scp|api`: the listener side and the REST API as separate processes.

Exactly one process (role ``scp`` or ``all``) runs the stability monitor and
the outbox, so results are sent once however many API processes run.  The
native test runs an ``scp`` process, an ``api`` process and a `cmb worker` on
the real PostgreSQL and Redis, and counts what the destination receives.
"""

from __future__ import annotations

import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from sqlalchemy import create_engine, text

from service.runtime import Service
from service.settings import Settings, SettingsError, load_settings
from tests.helpers.dcmtk import storescu
from tests.service.conftest import FAKE_PIPELINE, KEY, Proc, free_port, wait_for
from tests.service.dicom_factory import write_study
from tests.service.test_celery import (  # noqa: F401 - fixtures
    celery_env,
    queue,
    start_worker,
)

H = {"X-API-Key": KEY}


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_role_is_validated(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"role \(CMB_ROLE\)"):
        load_settings(data_dir=tmp_path, role="worker")
    with pytest.raises(SettingsError, match="give it an api_port"):
        load_settings(data_dir=tmp_path, role="api", api_port=0)
    with pytest.raises(SettingsError, match="metrics_port must differ"):
        load_settings(data_dir=tmp_path, role="all", api_port=9000, metrics_port=9000)
    assert load_settings(data_dir=tmp_path, role="scp", api_port=9000, metrics_port=9000)
    assert load_settings(data_dir=tmp_path).role == "all"


def test_each_role_starts_only_its_parts(make_settings: Callable[..., Settings]) -> None:
    api_port, metrics_port = free_port(), free_port()
    scp = Service(
        make_settings(
            role="scp", api_port=api_port, metrics_port=metrics_port, destinations=["D@127.0.0.1:9"]
        )
    )
    scp.start()
    try:
        assert scp.scp is not None and scp.dicom_port and _listening(scp.dicom_port)
        assert scp.exporter is not None and scp.worker is not None
        assert scp.monitor is not None and not scp.monitor.follow_only
        assert scp.api_port is None and not _listening(api_port)  # no REST API in role scp
        assert scp.ready() == {}
        # ... but its own counters can be scraped on the metrics port; the DB gauges are the API's
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert scraped.status_code == 200
        assert "cmb_associations_rejected_total" in scraped.text
        assert "cmb_deliveries_total" in scraped.text and "cmb_queue_depth" not in scraped.text
        api = Service(make_settings(role="api", api_port=api_port))
        api.start()
        try:
            assert api.api_port == api_port
            assert api.scp is None and api.exporter is None and api.worker is None
            assert api.monitor is not None and api.monitor.follow_only
            assert not _listening(api.settings.dicom_port)
            ready = httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
        finally:
            api.stop()
    finally:
        scp.stop()
    assert not _listening(metrics_port)  # stopped with the service


def test_upload_to_the_api_process_is_run_and_sent_by_the_scp_process(
    make_settings: Callable[..., Settings], tmp_path: Path, storescp: tuple[str, Path]
) -> None:
    """No broker: the scp process's embedded worker takes jobs the API queued in the DB."""
    dest, dest_dir = storescp
    scp = Service(make_settings(role="scp", destinations=[dest]))
    scp.start()
    api = Service(make_settings(role="api", api_port=free_port()))
    api.start()
    try:
        study, files = write_study(tmp_path / "up", n=2)
        up = httpx.post(
            f"http://127.0.0.1:{api.api_port}/studies",
            headers=H,
            files=[("files", (p.name, p.read_bytes())) for p in files],
            timeout=60,
        )
        assert up.status_code == 202, up.text
        job_id = up.json()["studies"][0]["job_id"]

        def state() -> str | None:
            r = httpx.get(f"http://127.0.0.1:{api.api_port}/jobs/{job_id}", headers=H)
            s = str(r.json()["state"])
            return s if s in ("delivered", "failed") else None

        assert wait_for(state, 90, "the uploaded study to be delivered") == "delivered"
        received = [dcmread(p) for p in dest_dir.iterdir()]
        assert [ds.StudyInstanceUID for ds in received] == [study]
    finally:
        api.stop()
        scp.stop()


def _serve(
    procs: Callable[..., Proc], tmp_path: Path, env: dict[str, str], role: str, *args: str
) -> tuple[Proc, int, int]:
    dicom_port, api_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "cmb.cli", "serve", "--role", role]
    cmd += ["--dicom-port", str(dicom_port), "--api-port", str(api_port), *args]
    proc = procs(cmd, tmp_path / f"{role}.log", env)
    wait_for(
        lambda: f"cmb serve ({role}):" in proc.output() or proc.p.poll() is not None,
        60,
        f"cmb serve --role {role} to start",
        every=0.2,
    )
    assert proc.p.poll() is None, proc.output()[-3000:]
    return proc, dicom_port, api_port


@pytest.mark.network
@pytest.mark.slow
def test_api_and_scp_processes_with_a_celery_worker_deliver_each_result_once(
    postgres_url: str,
    queue: str,  # noqa: F811
    procs: Callable[..., Proc],
    tmp_path: Path,
) -> None:
    if shutil.which("storescp") is None:
        pytest.skip("dcmtk storescp is not installed")
    # The destination keeps every received instance under its own file name (-uf),
    # so a second send of the same result would show up as a second file.
    dest_port, dest_dir = free_port(), tmp_path / "dest"
    dest_dir.mkdir()
    procs(
        ["storescp", "-aet", "DEST", "-uf", "-od", str(dest_dir), str(dest_port)],
        tmp_path / "storescp.log",
    )
    wait_for(lambda: _listening(dest_port), 10, "storescp to listen")
    env = celery_env(
        postgres_url,
        queue,
        tmp_path / "shared",
        CMB_PIPELINE=FAKE_PIPELINE,
        CMB_STABLE_AFTER="1",
        CMB_ALLOW_AE="PACS",
    )
    # scp first: it migrates the schema (the api would wait on the same advisory lock).
    scp, scp_dicom, scp_api = _serve(
        procs, tmp_path, env, "scp", "--destination", f"DEST@127.0.0.1:{dest_port}"
    )
    api, api_dicom, api_port = _serve(procs, tmp_path, env, "api")
    start_worker(procs, tmp_path, env, "worker")
    assert _listening(scp_dicom) and not _listening(scp_api)
    assert not _listening(api_dicom)
    base = f"http://127.0.0.1:{api_port}"
    assert httpx.get(base + "/readyz", timeout=10).status_code == 200

    sent, _ = write_study(tmp_path / "sent", n=3)
    done = storescu(tmp_path / "sent", scp_dicom)
    assert done.returncode == 0, done.stdout + done.stderr
    uploaded, files = write_study(tmp_path / "uploaded", n=2)
    up = httpx.post(
        base + "/studies",
        headers=H,
        files=[("files", (p.name, p.read_bytes())) for p in files],
        timeout=60,
    )
    assert up.status_code == 202, up.text

    def delivered() -> list[dict[str, object]] | None:
        jobs = httpx.get(base + "/jobs", headers=H, timeout=10).json()["jobs"]
        bad = [j for j in jobs if j["state"] == "failed"]
        assert not bad, bad
        ok = [j for j in jobs if j["state"] == "delivered"]
        return ok if len(ok) == 2 else None

    jobs = wait_for(delivered, 120, "both studies to be delivered")
    assert {j["study_instance_uid"] for j in jobs} == {sent, uploaded}
    # Several more monitor/outbox rounds (0.2 s each): nothing is sent a second time.
    wait_for(lambda: len(list(dest_dir.iterdir())) >= 2, 10, "the files at the destination")
    quiet_until = time.monotonic() + 3
    while time.monotonic() < quiet_until:
        assert len(list(dest_dir.iterdir())) == 2, sorted(p.name for p in dest_dir.iterdir())
        time.sleep(0.2)
    received = [dcmread(p) for p in sorted(dest_dir.iterdir())]
    sop_uids = [str(ds.SOPInstanceUID) for ds in received]
    assert len(sop_uids) == len(set(sop_uids)) == 2, sop_uids
    assert sorted(str(ds.StudyInstanceUID) for ds in received) == sorted([sent, uploaded])
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT state, attempts FROM deliveries")).all()
    engine.dispose()
    assert [(str(s), a) for s, a in rows] == [("sent", 1), ("sent", 1)]
    # Stage latencies of the worker's jobs reach the api process's /metrics through the DB.
    metrics = httpx.get(base + "/metrics", timeout=10).text
    assert 'cmb_jobs{state="delivered"} 2.0' in metrics
    assert 'cmb_job_duration_seconds_count{outcome="succeeded"} 2.0' in metrics
    for proc in (scp, api):
        assert proc.p.poll() is None, proc.output()[-2000:]
