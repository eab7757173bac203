"""The outbox: result files go by C-STORE to their destinations until they land.

A failed send (peer down, association rejected, a non-success status) leaves
the row pending with ``attempts`` + 1, ``last_error`` and the next try after an
exponential back-off capped at ``export_max_backoff_s``: a destination that is
down for hours delays results but loses none.  When every row of a job is
sent, the job becomes ``delivered``.

With ``CMB_EXPORT_TLS`` every association to a destination is DICOM TLS
(PS3.15 Annex B): the destination's certificate is checked against
``CMB_EXPORT_TLS_CA`` (default: the system CAs) and its host name unless
``CMB_EXPORT_TLS_VERIFY=false``; ``CMB_EXPORT_TLS_CERT``/``_KEY`` are presented
when the PACS asks for a client certificate.
"""

from __future__ import annotations

import logging
import ssl
from datetime import timedelta

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from sqlalchemy import func, select

from service import metrics
from service.db.models import Delivery, DeliveryState, Job, JobState, utcnow
from service.db.session import Database
from service.polling import PollingLoop
from service.scu import associate
from service.settings import Destination, Settings

log = logging.getLogger(__name__)

#: ``last_error`` of a row that waits behind a failed older row.
WAITING = "waiting behind an older result to the same destination"

#: Output kinds that are DICOM files and go to the destinations.
DICOM_KINDS = ("seg", "sr", "pdf", "sc")


def client_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The SSL context of outgoing associations; None without ``export_tls``.

    Built once at start-up, so an unreadable certificate or key stops the
    service with the ``ssl`` error instead of failing every send.
    """
    if not settings.export_tls:
        return None
    ca = str(settings.export_tls_ca) if settings.export_tls_ca else None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if not settings.export_tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if settings.export_tls_cert is not None and settings.export_tls_key is not None:
        ctx.load_cert_chain(str(settings.export_tls_cert), str(settings.export_tls_key))
    return ctx


class Exporter(PollingLoop):
    """Polls due outbox rows and sends them, one association per destination per round."""

    name = "cmb-exporter"

    def __init__(self, settings: Settings, db: Database) -> None:
        super().__init__(settings.poll_interval_s)
        self.settings = settings
        self.db = db
        self.tls = client_tls_context(settings)

    def enqueue(self) -> int:
        """Outbox rows for succeeded jobs that have none yet (one per destination and file).

        Done here, in `cmb serve`, rather than by the worker that ran the job:
        the destinations are the listener's configuration, not the workers'.
        """
        if not self.settings.destinations:
            return 0
        now = utcnow()
        n = 0
        with self.db.session() as s:
            has_rows = select(Delivery.id).where(Delivery.job_id == Job.id).exists()
            jobs = s.scalars(
                select(Job)
                .where(Job.state == JobState.SUCCEEDED, ~has_rows)
                .order_by(Job.finished_at, Job.id)  # outbox ids follow completion order
                .limit(100)
            ).all()
            for job in jobs:
                for dest in self.settings.destinations:
                    for kind in DICOM_KINDS:
                        path = (job.outputs or {}).get(kind)
                        if path:
                            s.add(
                                Delivery(
                                    job_id=job.id,
                                    destination=dest,
                                    kind=kind,
                                    path=path,
                                    state=DeliveryState.PENDING,
                                    attempts=0,
                                    next_attempt_at=now,
                                )
                            )
                            n += 1
        return n

    def run_once(self) -> int:
        """Queue new results, then try every destination that has a due row.

        Per destination the outbox is FIFO: its pending rows go in the order the
        results were queued (job completion order), the older rows first even
        while they wait out a back-off, and a row that fails holds back the rows
        behind it.  A new result thus triggers a try of its destination, but can
        never land before an older one.  Returns how many rows were delivered.
        """
        self.enqueue()
        now = utcnow()
        with self.db.session() as s:
            due = s.scalars(
                select(Delivery.destination)
                .where(Delivery.state == DeliveryState.PENDING, Delivery.next_attempt_at <= now)
                .distinct()
            ).all()
            by_dest = {
                dest: [
                    (row_id, path)
                    for row_id, path in s.execute(
                        select(Delivery.id, Delivery.path)
                        .where(
                            Delivery.state == DeliveryState.PENDING,
                            Delivery.destination == dest,
                        )
                        .order_by(Delivery.id)
                        .limit(200)
                    )
                ]
                for dest in sorted(due)
            }
        sent = 0
        for dest, items in by_dest.items():
            sent += self._send(Destination.parse(dest), items)
        return sent

    def _send(self, dest: Destination, items: list[tuple[int, str]]) -> int:
        """Send ``items`` (FIFO order) over one association; stop at the first failure."""
        results: dict[int, str | None] = {}
        datasets: dict[int, Dataset] = {}
        for row_id, path in items:
            try:
                datasets[row_id] = dcmread(path)
            except (OSError, ValueError) as e:
                results[row_id] = f"cannot read result file: {e}"
                break  # the rows behind it wait: nothing overtakes an older result
        ae = AE(ae_title=self.settings.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.settings.dimse_timeout_s
        for sop_class, ts in {
            (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets.values()
        }:
            syntaxes = list(dict.fromkeys([ts, ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
            ae.add_requested_context(sop_class, syntaxes)
        if datasets:
            # The host name is checked against the certificate when verifying, else only sent (SNI).
            tls_args = None if self.tls is None else (self.tls, dest.host)
            try:
                assoc = associate(
                    ae, dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls_args
                )
            except (OSError, RuntimeError) as e:
                assoc = None
                error = f"cannot connect: {e}"
            else:
                error = "association rejected or aborted"
                if tls_args is not None:
                    error += " (TLS: check the destination's certificate and port)"
            if assoc is not None and assoc.is_established:
                try:
                    for row_id, ds in datasets.items():
                        status = assoc.send_c_store(ds)
                        code = getattr(status, "Status", None)
                        if code is None:
                            results[row_id] = "no response (timeout or abort)"
                        elif code in (0x0000, 0xB000, 0xB007, 0xB006):
                            results[row_id] = None
                            continue
                        else:
                            results[row_id] = f"C-STORE status 0x{code:04X}"
                        break  # head-of-line: the rows behind a failed one wait for it
                finally:
                    assoc.release()
            else:
                # No association: every row failed alike (each counts an attempt).
                for row_id in datasets:
                    results.setdefault(row_id, error)
        held = [row_id for row_id, _ in items if row_id not in results]
        return self._record(dest, results, held)

    def _record(self, dest: Destination, results: dict[int, str | None], held: list[int]) -> int:
        """Record sends and failures; ``held`` rows were not tried (behind a failed row)."""
        now = utcnow()
        st = self.settings
        jobs_touched: set[str] = set()
        sent = 0
        with self.db.session() as s:
            for row_id, error in results.items():
                d = s.get(Delivery, row_id)
                if d is None:
                    continue
                jobs_touched.add(d.job_id)
                d.attempts += 1
                if error is None:
                    d.state = DeliveryState.SENT
                    d.delivered_at = now
                    d.last_error = None
                    sent += 1
                    metrics.DELIVERIES.labels("sent").inc()
                else:
                    delay = min(
                        st.export_max_backoff_s, st.export_backoff_s * 2 ** (d.attempts - 1)
                    )
                    d.next_attempt_at = now + timedelta(seconds=delay)
                    d.last_error = error[:500]
                    metrics.DELIVERIES.labels("failed").inc()
                    log.warning(
                        "delivery failed, retry in %.0f s",
                        delay,
                        extra={"job_id": d.job_id, "destination": str(dest), "error": error},
                    )
            retry_at = max(
                (d.next_attempt_at for i in results if (d := s.get(Delivery, i)) is not None),
                default=now,
            )
            for row_id in held:
                d = s.get(Delivery, row_id)
                if d is not None and d.state == DeliveryState.PENDING:
                    d.next_attempt_at = max(d.next_attempt_at, retry_at)
                    d.last_error = WAITING
            s.flush()
            for job_id in jobs_touched:
                unsent = s.scalar(  # pending or parked: not delivered yet
                    select(func.count()).where(
                        Delivery.job_id == job_id, Delivery.state != DeliveryState.SENT
                    )
                )
                job = s.get(Job, job_id)
                if job is not None and not unsent and job.state == JobState.SUCCEEDED:
                    job.state = JobState.DELIVERED
                    job.updated_at = now
                    log.info("job delivered", extra={"job_id": job_id, "destination": str(dest)})
        return sent
