"""Prometheus metrics: counters observed in-process, job/queue gauges read from the DB at scrape.

Counters live in one registry per process (`REGISTRY`); the API serves it at
``/metrics``.  Gauges that describe shared state (jobs by state, queue depth,
pending deliveries) are computed from the database when scraped, so they are
right whichever process (serve or a Celery worker) changed the state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from service.db.session import Database

REGISTRY = CollectorRegistry(auto_describe=True)

INSTANCES_RECEIVED = Counter(
    "cmb_instances_received",
    "DICOM instances received, by channel (dimse, rest, stow) and outcome",
    ["channel", "outcome"],
    registry=REGISTRY,
)
ASSOCIATIONS_REJECTED = Counter(
    "cmb_associations_rejected", "Associations refused (unknown AE or address)", registry=REGISTRY
)
JOB_SECONDS = Histogram(
    "cmb_job_duration_seconds",
    "Wall time of one job, by outcome",
    ["outcome"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "cmb_stage_duration_seconds",
    "Pipeline stage latencies (from Result.timings_s)",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "cmb_deliveries", "C-STORE sends of results, by outcome", ["outcome"], registry=REGISTRY
)


def observe_job(summary: dict[str, Any] | None) -> None:
    """Add one finished job's stage timings and duration to the histograms."""
    summary = summary or {}
    for stage, seconds in (summary.get("timings_s") or {}).items():
        STAGE_SECONDS.labels(stage).observe(float(seconds))
    JOB_SECONDS.labels("succeeded").observe(float(summary.get("duration_s", 0.0)))


class JobTimingsFollower:
    """For Celery mode: observe the timings of jobs that *workers* finished.

    The workers (a prefork pool, no HTTP endpoint) cannot expose histograms,
    so `cmb serve` reads each newly finished job's summary from the DB once.
    """

    def __init__(self, db: Database) -> None:
        from service.db.models import utcnow

        self.db = db
        self.since = utcnow()

    def run_once(self) -> int:
        from sqlalchemy import select

        from service.db.models import Job, JobState

        with self.db.session() as s:
            rows = s.execute(
                select(Job.finished_at, Job.summary)
                .where(
                    Job.finished_at > self.since,
                    Job.state.in_([JobState.SUCCEEDED, JobState.DELIVERED]),
                )
                .order_by(Job.finished_at)
                .limit(1000)
            ).all()
        for finished_at, summary in rows:
            observe_job(summary)
            self.since = max(self.since, finished_at)
        return len(rows)


class DatabaseCollector(Collector):
    """Jobs by state, queue depth, studies held by refused instances and pending deliveries
    (in all and per destination), read from the DB at scrape time."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        from sqlalchemy import func, select

        from service.db.models import (
            Delivery,
            DeliveryState,
            Job,
            JobState,
            Refusal,
            Study,
            utcnow,
        )

        with self.db.session() as s:
            rows = s.execute(select(Job.state, func.count()).group_by(Job.state)).all()
            # studies not processed yet that wait for instances refused for lack of space
            held = s.scalar(
                select(func.count(func.distinct(Refusal.study_instance_uid)))
                .join(Study, Study.study_instance_uid == Refusal.study_instance_uid)
                .where(Study.dirty.is_(True))
            )
            # per destination and unsent state: files, and when the oldest of their results
            # was ready (its job's finish), so that an alert can fire on a refused head-of-line
            # result; one grouped query, every outbox gauge below is read off it
            unsent = s.execute(
                select(
                    Delivery.destination, Delivery.state, func.count(), func.min(Job.finished_at)
                )
                .join(Job, Job.id == Delivery.job_id)
                .where(Delivery.state != DeliveryState.SENT)
                .group_by(Delivery.destination, Delivery.state)
            ).all()
        backlog = [(d, n, oldest) for d, st, n, oldest in unsent if st == DeliveryState.PENDING]
        parked_rows = [(d, n) for d, st, n, _ in unsent if st == DeliveryState.PARKED]
        counts = {JobState(state).value: int(n) for state, n in rows}
        jobs = GaugeMetricFamily("cmb_jobs", "Jobs by state", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        yield jobs
        yield GaugeMetricFamily(
            "cmb_queue_depth", "Jobs waiting to run", value=counts.get(JobState.QUEUED.value, 0)
        )
        yield GaugeMetricFamily(
            "cmb_studies_waiting_for_refused",
            "Studies not processed yet whose instances refused for lack of space were not sent"
            " again (each waits up to CMB_REFUSAL_HOLD_S)",
            value=int(held or 0),
        )
        yield GaugeMetricFamily(
            "cmb_deliveries_pending",
            "Result files not yet delivered",
            value=sum(int(n) for _, n, _ in backlog),
        )
        files = GaugeMetricFamily(
            "cmb_destination_backlog",
            "Result files not yet delivered, per destination",
            labels=["destination"],
        )
        age = GaugeMetricFamily(
            "cmb_destination_oldest_pending_seconds",
            "Seconds since the oldest result not yet delivered to the destination was ready",
            labels=["destination"],
        )
        now = utcnow()
        for destination, n, oldest in backlog:
            files.add_metric([destination], int(n))
            waited = (now - oldest).total_seconds() if oldest is not None else 0.0
            age.add_metric([destination], max(0.0, waited))
        yield files
        yield age
        parked = GaugeMetricFamily(
            "cmb_destination_parked",
            "Result files set aside by an operator (kept, not sent), per destination",
            labels=["destination"],
        )
        for destination, n in parked_rows:
            parked.add_metric([destination], int(n))
        yield parked


def database_registry(db: Database) -> CollectorRegistry:
    """A registry holding the DB collector of ``db`` (one per API app)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(DatabaseCollector(db))
    return registry
