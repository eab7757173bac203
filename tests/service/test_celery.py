"""`cmb serve` + `cmb worker` on the real Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432).

Each test gets its own PostgreSQL database and its own Celery queue name, so
parallel runs do not see each other's jobs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.helpers.dcmtk import storescu
from tests.service.conftest import FAKE_PIPELINE, Proc, wait_for
from tests.service.dicom_factory import write_study
from tests.service.study_factory import write_model, write_phantom_study
from tests.service.test_serve_cli import check_results, serve_env, start_serve

pytestmark = [pytest.mark.network, pytest.mark.slow]

REDIS = os.environ.get("CMB_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
def queue() -> Iterator[str]:
    """A Celery queue of this test only; its Redis keys are removed afterwards."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS, socket_timeout=2)
        client.ping()
    except redis.RedisError as e:
        pytest.skip(f"Redis at {REDIS} unavailable: {type(e).__name__}")
    name = f"cmb-test-{uuid.uuid4().hex[:8]}"
    yield name
    client.delete(name, f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")
    client.close()


def celery_env(postgres_url: str, queue: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return serve_env(
        CMB_DATABASE_URL=postgres_url,
        CMB_BROKER_URL=REDIS,
        CMB_QUEUE=queue,
        CMB_DATA_DIR=str(data_dir),
        **extra,
    )


def start_worker(
    procs: Callable[..., Proc], tmp_path: Path, env: dict[str, str], name: str
) -> Proc:
    proc = procs(
        [sys.executable, "-m", "cmb.cli", "worker", "--concurrency", "1"],
        tmp_path / f"{name}.log",
        env,
    )
    wait_for(lambda: "ready" in proc.output() or proc.p.poll() is not None, 60, f"{name} ready")
    assert proc.p.poll() is None, proc.output()[-3000:]
    return proc


def test_serve_and_worker_on_redis_and_postgres(
    postgres_url: str,
    queue: str,
    procs: Callable[..., Proc],
    storescp: tuple[str, Path],
    tmp_path: Path,
) -> None:
    dest, dest_dir = storescp
    model = write_model(tmp_path / "model.onnx")
    env = celery_env(
        postgres_url, queue, tmp_path / "shared", CMB_MODEL_PATH=str(model), CMB_LOCATION="off"
    )
    served = start_serve(procs, tmp_path, dest, model, env=env, name="shared")
    start_worker(procs, tmp_path, env, "worker1")
    study = write_phantom_study(tmp_path / "study")
    sent = storescu(study.root, served.dicom_port)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    wait_for(lambda: len(list(dest_dir.iterdir())) >= 2, 180, "SEG + SR at the destination")
    check_results(dest_dir, study)
    jobs = wait_for(
        lambda: [j for j in served.get("/jobs").json()["jobs"] if j["state"] == "delivered"],
        30,
        "the job to be delivered",
    )
    assert jobs[0]["summary"]["n_detections"] == study.n_cmbs
    # Stage latencies of the worker's job reach cmb serve's /metrics through the DB.
    metrics = served.get("/metrics").text
    assert 'cmb_stage_duration_seconds_count{stage="infer"} 1.0' in metrics
    assert 'cmb_job_duration_seconds_count{outcome="succeeded"} 1.0' in metrics
    # The state really is in PostgreSQL.
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT state FROM jobs")).scalars().all() == ["delivered"]
    engine.dispose()


def test_job_survives_a_killed_worker_process(
    postgres_url: str, queue: str, procs: Callable[..., Proc], tmp_path: Path
) -> None:
    env = celery_env(postgres_url, queue, tmp_path / "shared", CMB_PIPELINE=FAKE_PIPELINE)
    model = tmp_path / "unused.onnx"
    served = start_serve(procs, tmp_path, "DEST@127.0.0.1:9", model, env=env, name="shared")
    worker = start_worker(procs, tmp_path, env, "worker1")
    study, _ = write_study(tmp_path / "study", n=2, descriptions=("SLEEP_ONCE",))
    assert storescu(tmp_path / "study", served.dicom_port).returncode == 0
    job = wait_for(
        lambda: next(
            (j for j in served.get("/jobs").json()["jobs"] if j["state"] == "running"), None
        ),
        60,
        "the job to run",
    )
    marker = tmp_path / "shared" / "results" / "slept-once"
    wait_for(marker.exists, 60, "the pipeline to start its (first, long) attempt")
    # Kill the pool process that runs the job (as the OOM killer would).
    children = subprocess.run(
        ["pgrep", "-P", str(worker.p.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert children, worker.output()[-2000:]
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    done = wait_for(
        lambda: (lambda j: j if j["state"] in ("succeeded", "delivered", "failed") else None)(
            served.get(f"/jobs/{job['id']}").json()
        ),
        90,
        "the job to finish after the worker process died",
    )
    assert done["state"] in ("succeeded", "delivered"), done["reason"]
    assert done["attempts"] == 2
    assert done["study_instance_uid"] == study


def test_celery_time_limit_and_refused_study_fail_with_reason(
    postgres_url: str, queue: str, procs: Callable[..., Proc], tmp_path: Path
) -> None:
    env = celery_env(
        postgres_url,
        queue,
        tmp_path / "shared",
        CMB_PIPELINE=FAKE_PIPELINE,
        CMB_JOB_TIME_LIMIT_S="4",
    )
    served = start_serve(
        procs, tmp_path, "DEST@127.0.0.1:9", tmp_path / "x.onnx", env=env, name="shared"
    )
    start_worker(procs, tmp_path, env, "worker1")
    slow, _ = write_study(tmp_path / "slow", n=1, descriptions=("SLEEP",))
    bad, _ = write_study(tmp_path / "bad", n=1, descriptions=("FAIL_CMB",))
    assert storescu(tmp_path / "slow", served.dicom_port).returncode == 0
    # The refused study comes by REST: uploads are queued on the broker at once.
    files = [("files", (p.name, p.read_bytes())) for p in (tmp_path / "bad").rglob("*.dcm")]
    assert served.post("/studies", files=files).status_code == 202

    def failed() -> dict[str, str] | None:
        jobs = served.get("/jobs", params={"state": "failed"}).json()["jobs"]
        return {j["study_instance_uid"]: j["reason"] for j in jobs} if len(jobs) == 2 else None

    reasons = wait_for(failed, 90, "both jobs to fail")
    assert reasons[slow] == "time limit of 4 s exceeded"
    assert reasons[bad].startswith("NoUsableSeriesError")
