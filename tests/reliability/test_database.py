"""PostgreSQL restarted under a running service (a private cluster, initdb + pg_ctl).

The cluster is made for this test in a temporary folder and run as the
``postgres`` system user (PostgreSQL refuses to run as root); skipped where
there is no such user or no initdb.  While the database is down, C-STORE
answers a failure status (nothing is acknowledged that is not recorded); the
sender retries; after the restart every instance is recorded once and the
job runs once.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.db.models import JobState
from service.runtime import Service
from service.settings import Settings
from tests.reliability.conftest import (
    FIGURES,
    Destination,
    free_port,
    send,
    study_datasets,
    wait_for,
)
from tests.reliability.test_faults import jobs_of, stored_uids

pytestmark = [pytest.mark.network, pytest.mark.slow]


class Cluster:
    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port

    def pg_ctl(self, *args: str) -> None:
        run = subprocess.run(
            ["runuser", "-u", "postgres", "--", "pg_ctl", "-D", str(self.folder / "db"),
             "-l", str(self.folder / "log"), "-w", "-t", "60", *args],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        if run.returncode != 0:
            raise RuntimeError(f"pg_ctl {args[0]} failed: {run.stdout} {run.stderr}")

    def options(self) -> str:
        return f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    try:
        pg = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres system user to run a private cluster as")
    if os.geteuid() != 0:
        pytest.skip("starting a cluster as the postgres user needs root")
    folder = Path(tempfile.mkdtemp(prefix="cmb-pg-"))
    os.chown(folder, pg.pw_uid, pg.pw_gid)
    init = subprocess.run(
        ["runuser", "-u", "postgres", "--", "initdb", "-D", str(folder / "db"), "-A", "trust",
         "-U", "postgres", "--no-sync"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    c = Cluster(folder, free_port())
    c.pg_ctl("start", "-o", c.options())
    yield c
    try:
        c.pg_ctl("stop", "-m", "immediate")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_postgres_restarted_under_the_service(
    services: Callable[[Settings], Service],
    make_settings: Callable[..., Settings],
    destination: Callable[..., Destination],
    cluster: Cluster,
) -> None:
    dest = destination()
    svc = services(
        make_settings(database_url=cluster.url, destinations=[dest.address], stable_after=3.0)
    )
    port = svc.dicom_port or 0
    datasets = study_datasets(12, description="SLOW")
    assert send(port, datasets[:4]) == [0] * 4
    cluster.pg_ctl("stop", "-m", "immediate")  # a crash, not a clean shutdown
    during = send(port, datasets[4:8])
    acked_during = [ds for ds, st in zip(datasets[4:8], during, strict=True) if st == 0]
    assert all(st is not None for st in during)
    down_at = time.monotonic()
    cluster.pg_ctl("start", "-o", cluster.options())

    def resend() -> bool:
        return send(port, datasets) == [0] * len(datasets)

    wait_for(resend, 60, "the SCP to store again after the database came back", every=0.5)
    recovery = time.monotonic() - down_at
    on_disk = stored_uids(svc)
    assert set(on_disk) == {str(ds.SOPInstanceUID) for ds in datasets}
    job = wait_for(
        lambda: next((j for j in jobs_of(svc) if j.state == JobState.DELIVERED), None),
        60,
        "the job to run and be delivered",
    )
    assert job.n_instances == 12
    assert len(jobs_of(svc)) == 1
    time.sleep(1.0)
    received = [uid for uid, _ in dest.received()]
    assert len(received) == 1
    FIGURES.fault(
        "PostgreSQL crashed (immediate stop) and restarted",
        survived=True,
        lost=0,
        duplicates=len(received) - 1,
        recovery_s=round(recovery, 1),
        detail=f"statuses while down: {sorted({f'0x{s:04X}' for s in during if s is not None})}; "
        f"{len(acked_during)} acknowledged while down",
    )
