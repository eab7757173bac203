"""Bounded load: N concurrent DICOM senders on loopback for a bounded time.

Every acknowledged instance must be in the spool (file + row); the p95
C-STORE latency seen by the senders and the failures are reported.  Sized
for the 2-core CI machine: 8 senders (processes) for 8 s.
"""

from __future__ import annotations

import multiprocessing
import statistics
from collections.abc import Callable

import pytest

from service.runtime import Service
from service.settings import Settings
from tests.reliability.conftest import FIGURES
from tests.reliability.load_sender import send_for
from tests.reliability.test_faults import stored_uids

pytestmark = [pytest.mark.network, pytest.mark.slow]

N_SENDERS = 8
SECONDS = 8.0


def test_concurrent_senders_for_a_bounded_time(
    services: Callable[[Settings], Service], make_settings: Callable[..., Settings]
) -> None:
    svc = services(make_settings(stable_after=3600))
    port = svc.dicom_port or 0
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(N_SENDERS) as pool:
        results = pool.starmap(send_for, [(port, SECONDS, i) for i in range(N_SENDERS)])
    latencies = sorted(x for r in results for x in r["latencies"])  # type: ignore[attr-defined]
    statuses = [s for r in results for s in r["statuses"]]  # type: ignore[attr-defined]
    acked = [u for r in results for u in r["acked"]]  # type: ignore[attr-defined]
    failures = [s for s in statuses if s != 0]
    on_disk = stored_uids(svc)
    lost = [u for u in acked if u not in on_disk]
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan")
    FIGURES.input(
        "load",
        senders=N_SENDERS,
        seconds=SECONDS,
        instances_sent=len(statuses),
        stored=len(acked),
        failures=len(failures),
        lost=len(lost),
        p50_ms=round(1000 * statistics.median(latencies), 1) if latencies else None,
        p95_ms=round(1000 * p95, 1),
        per_second=round(len(acked) / SECONDS, 1),
    )
    FIGURES.fault(
        f"bounded load: {N_SENDERS} concurrent senders for {SECONDS:.0f} s",
        survived=True,
        lost=len(lost),
        duplicates=len(acked) - len(set(acked)),
        recovery_s=None,
        detail=f"{len(acked)} stored, {len(failures)} failures, p95 C-STORE {1000 * p95:.0f} ms",
    )
    assert all("error" not in r for r in results), results
    assert len(acked) > N_SENDERS * 10
    assert not failures
    assert not lost
    assert len(on_disk) == len(acked)
