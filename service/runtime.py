"""`cmb serve` as an object: DB, spool, SCP, stability monitor, worker, outbox, REST API.

`Service.start()` brings every part up (failing loudly on a port in use or a
database it cannot migrate), `Service.stop()` takes them down in reverse
order.  With a broker configured, the monitor hands jobs to Celery and no
embedded worker runs; otherwise the embedded worker does the work.

``CMB_ROLE`` splits the parts over processes that share the database and the
data directory (docs/service.md, "Roles"):

* ``all`` (default): everything in one process.
* ``scp``: the Storage SCP, the stability monitor, the outbox and (without a
  broker) the embedded worker.  These are the singletons: run exactly one
  ``scp`` (or ``all``) process per database.
* ``api``: the REST API only.  Uploads are written to the shared spool and
  their jobs queued in the database (and sent to the broker, if any); the
  ``scp`` process's worker/outbox take it from there.  Any number may run.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from service import metrics
from service.db.models import Job, JobState, utcnow
from service.db.session import Database
from service.embedded import EmbeddedWorker
from service.export import Exporter
from service.logs import install_redaction
from service.polling import PollingLoop
from service.retention import purge_expired
from service.scp import StorageSCP
from service.settings import Settings
from service.stability import create_job, stable_studies
from service.store import Spool

log = logging.getLogger(__name__)

#: How often the retention purge runs (when CMB_RETENTION_DAYS is set).
PURGE_EVERY_S = 600.0
#: A queued job nobody claimed for this long is sent to the broker again (lost message).
REDISPATCH_AFTER_S = 300.0


def ensure_api_key(settings: Settings) -> Settings:
    """With no key configured, create one in ``<data_dir>/api-key`` (mode 0600) and use it."""
    if settings.api_keys:
        return settings
    path = settings.data_dir / "api-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24) + "\n")
    key = path.read_text().strip()
    log.warning("no CMB_API_KEYS configured: using the generated key in %s", path)
    return settings.model_copy(update={"api_keys": [f"local:{key}"]})


class Monitor(PollingLoop):
    """Turns stable studies into jobs and (with Celery) dispatches queued jobs."""

    name = "cmb-monitor"

    def __init__(
        self,
        settings: Settings,
        db: Database,
        celery_app: Any = None,
        *,
        follow_only: bool = False,
    ) -> None:
        """``follow_only`` (role ``api``): no stability checks, sweeps or purges, only
        dispatching uploads to the broker and following finished jobs' timings for
        this process's ``/metrics``; the ``scp`` process does the rest."""
        super().__init__(settings.poll_interval_s)
        self.settings = settings
        self.db = db
        self.celery_app = celery_app
        self.follow_only = follow_only
        self._next_purge = 0.0
        self._timings = metrics.JobTimingsFollower(db)

    def run_once(self) -> list[str]:
        if self.follow_only:
            self._timings.run_once()
            return []
        created = []
        for study_uid in stable_studies(
            self.db, self.settings.stable_after, refusal_hold_s=self.settings.refusal_hold_s
        ):
            job_id = create_job(self.db, study_uid)
            if job_id:
                created.append(job_id)
                self.dispatch(job_id)
        if self.celery_app is not None:
            self._redispatch_stale()
            self._timings.run_once()
        if self.settings.retention_days and time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + PURGE_EVERY_S
            purge_expired(self.db, self.settings.retention_days)
        return created

    def dispatch(self, job_id: str) -> None:
        if self.celery_app is None:
            return  # the embedded worker polls the job table
        from service.tasks import dispatch

        try:
            dispatch(self.celery_app, self.settings, job_id)
        except Exception as e:  # broker down: the job stays queued, the sweep resends it
            log.error("cannot send job to the broker: %s", e, extra={"job_id": job_id})

    def _redispatch_stale(self) -> None:
        cutoff = utcnow() - timedelta(seconds=REDISPATCH_AFTER_S)
        with self.db.session() as s:
            stale = s.scalars(
                select(Job.id).where(Job.state == JobState.QUEUED, Job.next_attempt_at <= cutoff)
            ).all()
            if stale:
                s.execute(update(Job).where(Job.id.in_(stale)).values(next_attempt_at=utcnow()))
        for job_id in stale:
            log.warning("re-sending a job nobody took", extra={"job_id": job_id})
            self.dispatch(job_id)


class Service:
    """Every long-running part of `cmb serve`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = ensure_api_key(settings)
        self.db: Database | None = None
        self.spool: Spool | None = None
        self.scp: StorageSCP | None = None
        self.monitor: Monitor | None = None
        self.worker: EmbeddedWorker | None = None
        self.exporter: Exporter | None = None
        self.celery_app: Any = None
        self._api_server: Any = None
        self._api_thread: threading.Thread | None = None
        self._metrics_server: Any = None
        self.dicom_port: int | None = None
        self.api_port: int | None = None

    def start(self) -> None:
        install_redaction()  # also when embedded without `configure_logging` (tests, demo)
        st = self.settings
        for d in (st.data_dir, st.spool_dir, st.results_dir):
            Path(d).mkdir(parents=True, exist_ok=True)
        self.db = Database(st.db_url)
        self.spool = Spool(st.spool_dir, self.db, int(st.disk_reserve_mb * 2**20))
        self.spool.remove_cut_writes()  # before anything writes to the spool
        if st.broker_url:
            from service.tasks import make_celery

            self.celery_app = make_celery(st)
        if st.metrics_port:
            self._start_metrics()
        if not st.runs_scp:  # role api: the REST API (and its metrics) only
            self.monitor = Monitor(st, self.db, self.celery_app, follow_only=True)
            self.monitor.start()
            if st.api_port:
                self._start_api()
            return
        if not st.broker_url:
            self.worker = EmbeddedWorker(st, self.db)
            self.worker.start()
        self.monitor = Monitor(st, self.db, self.celery_app)
        self.monitor.start()
        self.exporter = Exporter(st, self.db)
        self.exporter.start()
        if st.dicom_port:
            self.scp = StorageSCP(st, self.spool)
            self.dicom_port = self.scp.start()
        if st.api_port and st.runs_api:
            self._start_api()

    def _start_api(self) -> None:
        import uvicorn

        from service.api.app import create_app

        if self.db is None or self.spool is None:
            raise RuntimeError("start() the database and spool before the API")
        app = create_app(self.settings, self.db, self.spool, self)
        config = uvicorn.Config(
            app,
            host=self.settings.api_host,
            port=self.settings.api_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        self._api_server = server
        self._api_thread = threading.Thread(target=server.run, name="cmb-api", daemon=True)
        self._api_thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not self._api_thread.is_alive() or time.monotonic() > deadline:
                raise OSError(
                    f"the REST API cannot listen on {self.settings.api_host}:"
                    f"{self.settings.api_port}"
                )
            time.sleep(0.05)
        self.api_port = self.settings.api_port

    def _start_metrics(self) -> None:
        """This process's counters (DICOM instances received, associations rejected,
        deliveries) on ``metrics_port``: role ``scp`` serves no REST API, so without it
        they could not be scraped.  The database gauges stay with the API's ``/metrics``
        (one source, not one per process)."""
        from prometheus_client import start_http_server

        server, _ = start_http_server(
            self.settings.metrics_port, self.settings.metrics_host, registry=metrics.REGISTRY
        )
        self._metrics_server = server

    def ready(self) -> dict[str, str]:
        """Problems that make the service not ready (empty dict: ready)."""
        problems: dict[str, str] = {}
        if (
            self.settings.runs_scp
            and self.settings.dicom_port
            and (self.scp is None or self.scp.server is None)
        ):
            problems["dicom"] = "the storage SCP is not listening"
        if self.celery_app is not None:
            try:
                with self.celery_app.connection_for_write() as conn:
                    conn.ensure_connection(max_retries=1, timeout=2)
            except Exception as e:
                problems["broker"] = f"broker unreachable: {type(e).__name__}"
        return problems

    def stop(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if self._api_server is not None:
            self._api_server.should_exit = True
        if self._api_thread is not None:
            self._api_thread.join(10)
        if self.scp is not None:
            self.scp.stop()
        for part in (self.monitor, self.worker, self.exporter):
            if part is not None:
                part.stop()
        if self.db is not None:
            self.db.dispose()
