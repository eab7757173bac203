"""`cmb serve` as a user starts it, with real peers: storescu in, storescp out, REST, STOW-RS.

Runs the real pipeline with a small fixed-filter test model on a phantom SWI
study (3 dark spheres) sent together with its phase and a T1 series.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread

from tests.helpers.dcmtk import storescu
from tests.service.conftest import API_KEY, KEY, REPO, Proc, _listening, free_port, wait_for
from tests.service.study_factory import sr_cmb_count, write_model, write_phantom_study

pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed"),
]
SEG_UID = "1.2.840.10008.5.1.4.1.1.66.4"
PDF_UID = "1.2.840.10008.5.1.4.1.1.104.1"
H = {"X-API-Key": KEY}


def serve_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMB_")}
    env.update(
        PYTHONPATH=str(REPO),
        CMB_API_KEYS=API_KEY,
        CMB_POLL_INTERVAL_S="0.2",
        CMB_DISK_RESERVE_MB="0",
        CMB_DEVICE="cpu",
        CMB_THREADS="1",
        CMB_LOCATION="off",  # the phantom is no brain
        CMB_EXPORT_BACKOFF_S="0.5",
        CMB_LOG_FORMAT="json",
        CMB_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


class Served:
    def __init__(self, proc: Proc, dicom_port: int, api_port: int) -> None:
        self.proc = proc
        self.dicom_port = dicom_port
        self.api = f"http://127.0.0.1:{api_port}"

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.api + path, headers=H, timeout=10, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.api + path, headers=H, timeout=60, **kw)


def start_serve(
    procs: Callable[..., Proc],
    tmp_path: Path,
    destination: str,
    model: Path,
    env: dict[str, str] | None = None,
    name: str = "serve",
) -> Served:
    dicom_port, api_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "cmb.cli",
        "serve",
        "--data-dir",
        str(tmp_path / name),
        "--dicom-port",
        str(dicom_port),
        "--ae-title",
        "CMB_AI",
        "--destination",
        destination,
        "--api-port",
        str(api_port),
        "--stable-after",
        "1",
        "--allow-ae",
        "PACS",
        "--model",
        str(model),
    ]
    proc = procs(cmd, tmp_path / f"{name}.log", env or serve_env())
    served = Served(proc, dicom_port, api_port)

    def up() -> bool:
        if proc.p.poll() is not None:
            pytest.fail(f"cmb serve exited: {proc.output()[-3000:]}")
        try:
            return _listening(dicom_port) and httpx.get(served.api + "/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, "cmb serve to listen", every=0.25)
    return served


def check_results(dest_dir: Path, study: Any) -> None:
    received = {dcmread(p).SOPClassUID: dcmread(p) for p in dest_dir.iterdir()}
    seg = received[SEG_UID]
    assert seg.StudyInstanceUID == study.study_instance_uid
    refs = {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence}
    assert refs == {study.swi_series_uid}
    srs = [ds for ds in received.values() if ds.Modality == "SR"]
    assert len(srs) == 1
    assert sr_cmb_count(srs[0]) == (study.n_cmbs, study.n_cmbs)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_model(tmp_path / "model.onnx")


def test_serve_end_to_end_embedded(
    procs: Callable[..., Proc], storescp: tuple[str, Path], tmp_path: Path, model: Path
) -> None:
    dest, dest_dir = storescp
    study = write_phantom_study(tmp_path / "study")
    served = start_serve(procs, tmp_path, dest, model, env=serve_env(CMB_OUTPUTS="seg,sr,pdf"))

    refused = storescu(study.root, served.dicom_port, calling="STRANGER")
    assert refused.returncode != 0

    sent = storescu(study.root, served.dicom_port)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    wait_for(lambda: len(list(dest_dir.iterdir())) >= 3, 180, "SEG, SR and PDF at the destination")
    check_results(dest_dir, study)
    pdfs = [ds for ds in map(dcmread, dest_dir.iterdir()) if ds.SOPClassUID == PDF_UID]
    assert len(pdfs) == 1
    assert pdfs[0].EncapsulatedDocument[:5] == b"%PDF-"

    jobs = wait_for(
        lambda: [j for j in served.get("/jobs").json()["jobs"] if j["state"] == "delivered"],
        30,
        "the job to be marked delivered",
    )
    assert len(jobs) == 1
    job = jobs[0]
    assert job["study_instance_uid"] == study.study_instance_uid
    assert job["summary"]["n_detections"] == study.n_cmbs
    assert job["summary"]["series_instance_uid"] == study.swi_series_uid
    assert {d["state"] for d in served.get(f"/jobs/{job['id']}").json()["deliveries"]} == {"sent"}
    seg = served.get(f"/jobs/{job['id']}/results/seg")
    assert seg.status_code == 200
    det = served.get(f"/jobs/{job['id']}/results/detections").json()
    assert sum(d["status"] == "kept" for d in det["detections"]) == study.n_cmbs
    metrics = httpx.get(served.api + "/metrics").text
    assert 'cmb_jobs{state="delivered"} 1.0' in metrics
    assert 'cmb_instances_received_total{channel="dimse",outcome="stored"} 60.0' in metrics

    log = served.proc.output()
    for secret in (study.patient_name, study.patient_id):
        assert secret not in log
    assert any(
        json.loads(line).get("msg") == "job succeeded"
        for line in log.splitlines()
        if line.startswith("{")
    )


def test_rest_upload_and_stow_rs(
    procs: Callable[..., Proc], storescp: tuple[str, Path], tmp_path: Path, model: Path
) -> None:
    from dicomweb_client.api import DICOMwebClient

    dest, _dest_dir = storescp
    served = start_serve(procs, tmp_path, dest, model)
    study = write_phantom_study(tmp_path / "study")

    # STOW-RS with a standard DICOMweb client (bearer token).
    client = DICOMwebClient(
        url=served.api + "/dicomweb", headers={"Authorization": f"Bearer {KEY}"}
    )
    datasets = [dcmread(p) for p in sorted((study.root / "swi").iterdir())]
    response = client.store_instances(datasets)
    assert len(response.ReferencedSOPSequence) == len(datasets)
    wrong = DICOMwebClient(url=served.api + "/dicomweb", headers={"Authorization": "Bearer bad"})
    with pytest.raises(Exception, match="401"):
        wrong.store_instances(datasets[:1])

    job = wait_for(
        lambda: next(
            (
                j
                for j in served.get("/jobs").json()["jobs"]
                if j["state"] in ("succeeded", "delivered", "failed")
            ),
            None,
        ),
        120,
        "the STOW-RS job to finish",
    )
    assert job["state"] in ("succeeded", "delivered"), job["reason"]
    assert job["summary"]["n_detections"] == study.n_cmbs
    r = served.get(f"/jobs/{job['id']}/results/sr")
    assert r.status_code == 200
    assert httpx.get(served.api + f"/jobs/{job['id']}/results/sr").status_code == 401
