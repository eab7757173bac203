"""The embedded worker: jobs claimed from the database, run in a child process.

Why not Celery with a server-less transport?  kombu's SQLAlchemy and
filesystem transports are "experimental" in kombu's own docs, poll, and would
make the database hold a second copy of the queue.  The job table already *is*
a durable queue (state, attempts, next_attempt_at), so the embedded mode polls
it directly; Celery + Redis adds horizontal scaling, not correctness.  Each
job runs in a spawned child process so that the time limit can be enforced by
killing it, and a crash in native code (ONNX Runtime, a codec) takes down the
job, not the listener.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import socket
from multiprocessing.connection import Connection
from typing import Any

from sqlalchemy import select

from service import jobs
from service.db.models import Job, JobState, utcnow
from service.db.session import Database
from service.logs import install_redaction
from service.polling import PollingLoop
from service.settings import Settings

log = logging.getLogger(__name__)


def _child(spec: jobs.JobSpec, processor: str, conn: Connection) -> None:
    """Child process entry: run the pipeline and send ("ok"|"failed"|"error", payload)."""
    install_redaction()  # a spawned process starts with Python's default warning output
    try:
        conn.send(("ok", jobs.run_pipeline(spec, processor)))
    except jobs.JobFailedError as e:
        conn.send(("failed", str(e)))
    except BaseException as e:  # reported to the parent, which decides on a retry
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def run_in_child(spec: jobs.JobSpec, processor: str, time_limit_s: float) -> tuple[str, Any]:
    """Run one job in a spawned process.

    Returns ("ok", report), ("failed", reason) for a refused study, ("error",
    reason) for a crash and ("timeout", reason) past the limit (child killed).
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(spec, processor, child), daemon=True)
    proc.start()
    child.close()
    try:
        if parent.poll(time_limit_s):
            try:
                outcome: tuple[str, Any] = parent.recv()
            except EOFError:
                outcome = ("error", "the job process exited without a result")
        else:
            outcome = ("timeout", f"time limit of {time_limit_s:.0f} s exceeded")
    finally:
        if proc.is_alive():
            proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
        parent.close()
    if outcome[0] == "error" and proc.exitcode not in (0, None):
        outcome = ("error", f"{outcome[1]} (exit code {proc.exitcode})")
    return outcome


class EmbeddedWorker(PollingLoop):
    """`concurrency` threads, each claiming the oldest due job and running it in a child."""

    name = "cmb-worker"
    drain = True  # run the next due job at once; sleep only when there was none

    def __init__(self, settings: Settings, db: Database) -> None:
        super().__init__(settings.poll_interval_s, threads=settings.worker_concurrency)
        self.settings = settings
        self.db = db
        self.processor = settings.pipeline
        self.worker_id = f"embedded@{socket.gethostname()}:{os.getpid()}"

    def start(self) -> None:
        n = jobs.requeue_orphans(self.db)
        if n:
            log.warning("requeued %d job(s) left running by an earlier process", n)
        super().start()

    def _next_due(self) -> str | None:
        with self.db.session() as s:
            return s.scalar(
                select(Job.id)
                .where(Job.state == JobState.QUEUED, Job.next_attempt_at <= utcnow())
                .order_by(Job.created_at)
                .limit(1)
            )

    def run_once(self) -> bool:
        """Claim and run one due job; False when there was none."""
        job_id = self._next_due()
        if job_id is None:
            return False
        spec = jobs.claim(self.db, self.settings, job_id, self.worker_id)
        if spec is None:
            return True  # another thread took it
        kind, payload = run_in_child(spec, self.processor, self.settings.job_time_limit_s)
        if kind == "ok":
            jobs.finish_success(self.db, self.settings, job_id, payload)
        else:
            jobs.finish_failure(
                self.db, self.settings, job_id, str(payload), terminal=kind in ("failed", "timeout")
            )
        return True
