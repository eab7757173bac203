"""service.demo.run_local: the whole path on loopback, as `cmb demo` runs it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from service.demo import LocalRun, run_local
from tests.service.study_factory import write_model, write_phantom_study

pytestmark = [pytest.mark.network, pytest.mark.slow]


def test_run_local_delivers_seg_and_sr(tmp_path: Path) -> None:
    study = write_phantom_study(tmp_path / "study")
    model = write_model(tmp_path / "model.onnx")
    pages: list[int] = []

    def look(run: LocalRun) -> None:
        page = httpx.get(f"{run.api_url}/ui/jobs/{run.job_id}", params={"api_key": run.api_key})
        pages.append(page.status_code)

    messages: list[str] = []
    run = run_local(
        study.root,
        tmp_path / "data",
        model_path=model,
        location="off",  # the phantom is no brain
        timeout_s=180,
        progress=messages.append,
        keep_serving=look,
    )
    assert run.state == "delivered", run.reason
    assert run.sent == 60
    assert run.summary["n_detections"] == study.n_cmbs
    assert sorted(dcmread(p).Modality for p in run.received) == ["SEG", "SR"]
    assert pages == [200]
    assert messages[0].startswith("service: DICOM CMB_AI@127.0.0.1:")
