"""Celery mode: the Redis broker killed and restarted empty while jobs are queued and running.

The suite runs its own ``redis-server`` on a free port with persistence off
(``--save ""``, no AOF), so a restart loses every queued message: the worst
case.  The job table is the truth; the monitor re-sends queued jobs nobody took
(after ``REDISPATCH_AFTER_S``, 300 s in production, shortened here).
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import service.runtime
from service.db.models import JobState
from service.runtime import Service
from service.settings import Settings
from tests.reliability.conftest import (
    FIGURES,
    PY,
    RELIABILITY_PIPELINE,
    Destination,
    Proc,
    free_port,
    kill_group,
    listening,
    python_env,
    send,
    study_datasets,
    wait_for,
)
from tests.reliability.test_faults import jobs_of

pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]


def start_redis(procs: Callable[..., Proc], tmp_path: Path, port: int, n: int) -> Proc:
    proc = procs(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        tmp_path / f"redis{n}.log",
    )  # fmt: skip
    wait_for(lambda: listening(port), 10, "redis-server to listen")
    return proc


def test_redis_restarted_while_jobs_are_queued_and_running(
    services: Callable[[Settings], Service],
    make_settings: Callable[..., Settings],
    destination: Callable[..., Destination],
    procs: Callable[..., Proc],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service.runtime, "REDISPATCH_AFTER_S", 4.0)
    port = free_port()
    redis = start_redis(procs, tmp_path, port, 1)
    broker = f"redis://127.0.0.1:{port}/0"
    queue = f"cmb-rel-{uuid.uuid4().hex[:8]}"
    dest = destination()
    svc = services(make_settings(broker_url=broker, queue=queue, destinations=[dest.address]))
    env = python_env(
        CMB_DATABASE_URL=svc.settings.db_url,
        CMB_BROKER_URL=broker,
        CMB_QUEUE=queue,
        CMB_DATA_DIR=str(svc.settings.data_dir),
        CMB_PIPELINE=RELIABILITY_PIPELINE,
        CMB_JOB_RETRY_BACKOFF_S="0.5",
    )
    worker = procs(
        [PY, "-m", "cmb.cli", "worker", "--concurrency", "1"], tmp_path / "worker.log", env
    )
    wait_for(lambda: "ready" in worker.output() or worker.p.poll() is not None, 90, "worker ready")
    assert worker.p.poll() is None, worker.output()[-2000:]
    studies = []
    for _ in range(4):
        ds = study_datasets(2, description="SLOW")
        studies.append(str(ds[0].StudyInstanceUID))
        assert send(svc.dicom_port or 0, ds) == [0, 0]

    def states() -> list[JobState]:
        return [j.state for j in jobs_of(svc)]

    wait_for(
        lambda: states().count(JobState.RUNNING) == 1 and states().count(JobState.QUEUED) >= 2,
        60,
        "one job running and two queued",
    )
    kill_group(redis.p)  # SIGKILL; with --save "" the queue is gone
    time.sleep(2.0)
    start_redis(procs, tmp_path, port, 2)
    back_at = time.monotonic()
    wait_for(
        lambda: len(jobs_of(svc)) == 4 and all(s == JobState.DELIVERED for s in states()),
        120,
        "every job to run and be delivered after the broker came back",
    )
    recovery = time.monotonic() - back_at
    time.sleep(1.0)
    received = [uid for uid, _ in dest.received()]
    assert len(received) == 4 == len(set(received))
    assert sorted(j.study_instance_uid for j in jobs_of(svc)) == sorted(studies)
    assert worker.p.poll() is None
    FIGURES.fault(
        "Redis killed and restarted empty (Celery mode), jobs queued and running",
        survived=True,
        lost=4 - len(set(received)),
        duplicates=len(received) - len(set(received)),
        recovery_s=round(recovery, 1),
        detail="4 jobs; lost messages re-sent by the monitor (REDISPATCH_AFTER_S 4 s here, "
        f"300 s in production); attempts {sorted(j.attempts for j in jobs_of(svc))}",
    )
