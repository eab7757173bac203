"""The REST API (FastAPI): upload, jobs, results, health, metrics, and the web page.

Routes that touch data need an API key (see service.api.auth); ``/healthz``,
``/readyz`` and ``/metrics`` carry no patient data and are open so that
orchestrators and Prometheus can reach them.  OpenAPI: ``/docs``, ``/openapi.json``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import delete, select, text

from service import metrics, outbox
from service.api import web
from service.api.auth import audit, require_key, set_cookie_if_asked
from service.api.limits import BodyLimitMiddleware
from service.api.upload import UploadReport, ZipLimits, split_multipart_related, store_files
from service.db.models import (
    MAX_ROW_ID,
    AuditEntry,
    Delivery,
    DeliveryState,
    Job,
    JobState,
    utcnow,
)
from service.db.session import Database
from service.outbox import DeliveryView, OutboxError
from service.settings import Settings
from service.stability import create_job
from service.store import NotStorableError, OutOfResourcesError, Spool

RESULT_KINDS = {
    "detections": "application/json",
    "seg": "application/dicom",
    "sr": "application/dicom",
    "pdf": "application/dicom",
    "sc": "application/dicom",
    "probability": "application/gzip",
    "labels": "application/gzip",
}
#: An outbox row's id in a path: out of the database's range is a 422, never a 500.
DeliveryId = Annotated[int, PathParam(ge=1, le=MAX_ROW_ID, description="outbox row id")]


def job_json(job: Job, deliveries: list[Delivery] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": job.id,
        "study_instance_uid": job.study_instance_uid,
        "state": job.state.value,
        "reason": job.reason,
        "attempts": job.attempts,
        "n_instances": job.n_instances,
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "summary": job.summary,
        "results": sorted((job.outputs or {}).keys()),
    }
    if deliveries is not None:
        out["deliveries"] = [DeliveryView.of(d).json() for d in deliveries]
    return out


def create_app(settings: Settings, db: Database, spool: Spool, service: Any = None) -> FastAPI:
    app = FastAPI(
        title="CMB detection service",
        version="0.1.0",
        description="Cerebral microbleed detection: upload studies, follow jobs, fetch "
        "detections, DICOM SEG and SR. Data routes need an API key "
        "(`X-API-Key` or `Authorization: Bearer`).",
    )
    app.state.api_keys = settings.api_key_map()
    app.state.db = db
    app.state.spool = spool
    app.state.settings = settings

    # Added before the audit middleware, so inside it: the 413 is raised in the route
    # (as the body is read) and answered, and audited, like any HTTP error.
    app.add_middleware(BodyLimitMiddleware, max_bytes=int(settings.max_upload_mb * 2**20))

    @app.middleware("http")
    async def _audit(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        set_cookie_if_asked(request, response)
        await run_in_threadpool(audit, db, request, response.status_code)
        return response

    def queue_study(study_instance_uid: str) -> str | None:
        """An upload is complete by definition: queue its job now (and hand it to Celery)."""
        job_id = create_job(db, study_instance_uid)
        monitor = getattr(service, "monitor", None)
        if job_id and monitor is not None:
            monitor.dispatch(job_id)
        return job_id

    zip_limits = ZipLimits.from_settings(settings)

    def upload_response(report: UploadReport) -> JSONResponse:
        jobs = {uid: queue_study(uid) for uid in report.studies} if report.stored else {}
        metrics.INSTANCES_RECEIVED.labels("rest", "stored").inc(len(report.stored))
        body = {
            "stored": len(report.stored),
            "duplicates": len(report.duplicates),
            "refused": [{"file": n, "reason": r} for n, r in report.refused],
            "studies": [
                {"study_instance_uid": uid, "job_id": jobs.get(uid)} for uid in report.studies
            ],
        }
        code = 202 if report.stored or report.duplicates else 400
        return JSONResponse(body, status_code=code)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """Readiness: database reachable, spool has room, listener up, broker reachable."""
        problems: dict[str, str] = {}
        try:
            with db.session() as s:
                s.execute(text("SELECT 1"))
        except Exception as e:
            problems["database"] = type(e).__name__
        try:
            spool.check_space()
        except OutOfResourcesError as e:
            problems["disk"] = str(e)
        if service is not None:
            problems.update(service.ready())
        return JSONResponse(
            {"status": "ready" if not problems else "not ready", "problems": problems},
            status_code=200 if not problems else 503,
        )

    # The process-wide counters, plus the job/queue gauges of THIS app's database
    # (a registry of its own, so that two apps in one process never mix databases).
    db_registry = metrics.database_registry(db)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics_route() -> PlainTextResponse:
        """Prometheus metrics."""
        body = generate_latest(metrics.REGISTRY) + generate_latest(db_registry)
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)

    @app.post("/studies", tags=["upload"], status_code=202)
    async def upload(
        request: Request,
        files: Annotated[list[UploadFile], File(description="DICOM files and/or zip archives")],
        principal: str = Depends(require_key),
    ) -> JSONResponse:
        """Upload a study as DICOM files or zip archives; a job is queued at once."""
        items = [(f.filename or "upload", await f.read()) for f in files]
        try:
            report = store_files(spool, items, f"rest:{principal}", zip_limits)
        except OutOfResourcesError as e:
            raise HTTPException(507, detail=str(e)) from e
        return upload_response(report)

    @app.post("/dicomweb/studies", tags=["upload"])
    async def stow_rs(request: Request, principal: str = Depends(require_key)) -> JSONResponse:
        """DICOMweb STOW-RS (multipart/related; type="application/dicom")."""
        body = await request.body()
        try:
            parts = split_multipart_related(request.headers.get("content-type", ""), body)
        except NotStorableError as e:
            raise HTTPException(415, detail=str(e)) from e
        try:
            report = store_files(
                spool,
                [(f"part{i + 1}", p) for i, p in enumerate(parts)],
                f"stow:{principal}",
                zip_limits,
            )
        except OutOfResourcesError as e:
            raise HTTPException(507, detail=str(e)) from e
        for uid in report.studies:
            queue_study(uid)
        ok = report.stored + report.duplicates
        payload: dict[str, Any] = {
            "00081199": {
                "vr": "SQ",
                "Value": [
                    {
                        "00081150": {"vr": "UI", "Value": [i.sop_class_uid]},
                        "00081155": {"vr": "UI", "Value": [i.sop_instance_uid]},
                    }
                    for i in ok
                ],
            }
        }
        if report.refused:
            payload["00081198"] = {
                "vr": "SQ",
                "Value": [{"00081197": {"vr": "US", "Value": [0xC000]}} for _ in report.refused],
            }
        code = 200 if ok and not report.refused else (202 if ok else 409)
        return JSONResponse(payload, status_code=code, media_type="application/dicom+json")

    @app.get("/jobs", tags=["jobs"])
    def list_jobs(
        state: JobState | None = None,
        study_instance_uid: str | None = None,
        since: Annotated[datetime | None, Query(description="created at or after")] = None,
        until: Annotated[datetime | None, Query(description="created before")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        _: str = Depends(require_key),
    ) -> dict[str, Any]:
        """Jobs, newest first, filtered by state, study and creation time."""
        q = select(Job).order_by(Job.created_at.desc()).limit(limit)
        if state is not None:
            q = q.where(Job.state == state)
        if study_instance_uid:
            q = q.where(Job.study_instance_uid == study_instance_uid)
        if since is not None:
            q = q.where(Job.created_at >= web.aware(since))
        if until is not None:
            q = q.where(Job.created_at < web.aware(until))
        with db.session() as s:
            return {"jobs": [job_json(j) for j in s.scalars(q).all()]}

    def get_job(job_id: str) -> tuple[Job, list[Delivery]]:
        with db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise HTTPException(404, detail=f"no job {job_id}")
            deliveries = list(
                s.scalars(select(Delivery).where(Delivery.job_id == job_id).order_by(Delivery.id))
            )
            return job, deliveries

    @app.get("/jobs/{job_id}", tags=["jobs"])
    def job_status(job_id: str, _: str = Depends(require_key)) -> dict[str, Any]:
        """One job: state, failure reason, summary, result kinds, deliveries."""
        job, deliveries = get_job(job_id)
        return job_json(job, deliveries)

    @app.post("/jobs/{job_id}/retry", tags=["jobs"], status_code=202)
    def retry_job(job_id: str, principal: str = Depends(require_key)) -> dict[str, Any]:
        """Run a failed or finished job again (e.g. after a model or configuration change).

        Its outputs are replaced (same output UIDs for the same series and model) and,
        once it succeeds, sent again to the destinations.
        """
        now = utcnow()
        with db.session() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None:
                raise HTTPException(404, detail=f"no job {job_id}")
            if job.state not in (JobState.FAILED, JobState.SUCCEEDED, JobState.DELIVERED):
                raise HTTPException(409, detail=f"job {job_id} is {job.state.value}")
            s.execute(delete(Delivery).where(Delivery.job_id == job_id))
            job.state = JobState.QUEUED
            job.attempts = 0
            job.reason = f"re-run requested by {principal}"
            job.next_attempt_at = now
            job.updated_at = now
            job.finished_at = None
        if service is not None and getattr(service, "monitor", None) is not None:
            service.monitor.dispatch(job_id)
        return {"id": job_id, "state": JobState.QUEUED.value}

    @app.get("/jobs/{job_id}/results/{kind}", tags=["results"])
    def job_result(job_id: str, kind: str, _: str = Depends(require_key)) -> FileResponse:
        """A result: detections (JSON); seg, sr, pdf, sc (DICOM); probability, labels (NIfTI)."""
        if kind not in RESULT_KINDS:
            raise HTTPException(404, detail=f"unknown result kind {kind!r}")
        job, _d = get_job(job_id)
        path = (job.outputs or {}).get(kind)
        if not path or not Path(path).is_file():
            raise HTTPException(404, detail=f"job {job_id} has no {kind} result")
        return FileResponse(path, media_type=RESULT_KINDS[kind], filename=Path(path).name)

    @app.get("/deliveries", tags=["deliveries"])
    def list_deliveries(
        destination: Annotated[str | None, Query(description="AE@host:port")] = None,
        state: DeliveryState | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        _: str = Depends(require_key),
    ) -> dict[str, Any]:
        """The outbox in sending order: per destination, its first pending row is the head."""
        rows = outbox.list_deliveries(db, destination=destination, state=state, limit=limit)
        return {"deliveries": [r.json() for r in rows]}

    @app.post("/deliveries/{delivery_id}/park", tags=["deliveries"])
    def park_delivery(delivery_id: DeliveryId, _: str = Depends(require_key)) -> dict[str, Any]:
        """Set aside a pending result the destination keeps refusing, so the later ones go.

        Nothing is lost: a parked result is kept (retention too), its job stays
        undelivered, its file stays downloadable, and ``/requeue`` sends it again.
        """
        try:
            return outbox.park(db, delivery_id).json()
        except OutboxError as e:
            raise HTTPException(e.status, detail=str(e)) from e

    @app.post("/deliveries/{delivery_id}/requeue", tags=["deliveries"])
    def requeue_delivery(delivery_id: DeliveryId, _: str = Depends(require_key)) -> dict[str, Any]:
        """Send a parked result again, at its old place in its destination's order."""
        try:
            return outbox.requeue(db, delivery_id).json()
        except OutboxError as e:
            raise HTTPException(e.status, detail=str(e)) from e

    @app.get("/audit", tags=["audit"])
    def audit_log(
        limit: Annotated[int, Query(ge=1, le=10000)] = 500,
        _: str = Depends(require_key),
    ) -> dict[str, Any]:
        """The newest audit entries: who (API key name) fetched or sent what, and when."""
        with db.session() as s:
            rows = s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit))
            return {
                "entries": [
                    {
                        "at": a.at.isoformat(),
                        "principal": a.principal,
                        "client": a.client,
                        "method": a.method,
                        "path": a.path,
                        "status": a.status,
                    }
                    for a in rows
                ]
            }

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui")

    web.register(app, db)
    return app
