"""The embedded worker's child process: result, refusal, time limit; orphan recovery."""

from __future__ import annotations

from pathlib import Path

from service import jobs
from service.embedded import run_in_child
from tests.service.conftest import FAKE_PIPELINE
from tests.service.dicom_factory import write_study


def _spec(tmp_path: Path, description: str) -> jobs.JobSpec:
    _study, files = write_study(tmp_path / description, n=1, descriptions=(description,))
    return jobs.JobSpec(
        job_id="j",
        study_instance_uid="s",
        inputs=[str(f) for f in files],
        out_dir=str(tmp_path / f"out-{description}"),
        attempt=1,
        options={"outputs": ("sr",)},
    )


def test_child_result_refusal_and_time_limit(tmp_path: Path) -> None:
    kind, report = run_in_child(_spec(tmp_path, "SWI"), FAKE_PIPELINE, 60)
    assert kind == "ok"
    assert report["summary"]["n_detections"] == 2
    assert Path(report["files"]["sr"]).is_file()

    kind, reason = run_in_child(_spec(tmp_path, "FAIL_CMB"), FAKE_PIPELINE, 60)
    assert (kind, reason.split(":")[0]) == ("failed", "NoUsableSeriesError")

    kind, reason = run_in_child(_spec(tmp_path, "FAIL_TRANSIENT"), FAKE_PIPELINE, 60)
    assert kind == "error"
    assert "simulated transient fault" in reason

    kind, reason = run_in_child(_spec(tmp_path, "SLEEP"), FAKE_PIPELINE, 3)
    assert kind == "timeout"
    assert "time limit of 3 s" in reason

    kind, reason = run_in_child(_spec(tmp_path, "CRASH"), FAKE_PIPELINE, 60)
    assert kind == "error"
    assert "exit code 9" in reason
