"""A small server-rendered web page: the job list and one job's result.

No build step, no JavaScript framework: HTML from Python with every value
escaped.  A result page shows the MARS summary, the table of kept microbleeds
and one key image per microbleed (the source slice through its centre with
the detection outlined), rendered on demand and cached in the result folder.
"""

from __future__ import annotations

import html
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from sqlalchemy import select

from service.api.auth import require_key_or_cookie
from service.db.models import Delivery, Instance, Job
from service.db.session import Database

log = logging.getLogger(__name__)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem}
th{background:#f0f0f0}.failed{color:#b00}.delivered,.succeeded,.sent{color:#070}.parked{color:#a60}
.keys img{width:256px;height:256px;image-rendering:pixelated;margin:.3rem;border:1px solid #999}
"""


def aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _page(title: str, body: str, refresh_s: int | None = None) -> HTMLResponse:
    refresh = f"<meta http-equiv='refresh' content='{refresh_s}'>" if refresh_s else ""
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'>{refresh}"
        f"<title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _detections(job: Job) -> list[dict[str, Any]]:
    path = (job.outputs or {}).get("detections")
    if not path or not Path(path).is_file():
        return []
    data = json.loads(Path(path).read_text())
    return [d for d in data.get("detections", []) if d.get("status") == "kept"]


def render_key_image(db: Database, job: Job, det: dict[str, Any], out: Path) -> None:
    """Source slice through the detection's centre, detection outlined in red (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import SimpleITK as sitk

    series_uid = (job.summary or {}).get("series_instance_uid")
    with db.session() as s:
        paths = s.scalars(select(Instance.path).where(Instance.series_instance_uid == series_uid))
        folder = {str(Path(p).parent) for p in paths}
    if len(folder) != 1:
        raise FileNotFoundError("the analysed series is not in the spool")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder.pop(), series_uid))
    image = reader.Execute()
    labels = sitk.ReadImage(str(job.outputs["labels"]))  # type: ignore[index]
    labels = sitk.Resample(labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
    idx = image.TransformPhysicalPointToIndex([float(c) for c in det["center_lps_mm"]])
    k = min(max(idx[2], 0), image.GetSize()[2] - 1)
    img = sitk.GetArrayFromImage(image)[k].astype(np.float32)
    lab = sitk.GetArrayFromImage(labels)[k] == int(det["id"])
    lo, hi = np.percentile(img, [1, 99.5])
    fig = plt.figure(figsize=(2.56, 2.56), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6))
    if lab.any():
        ax.contour(lab.astype(float), levels=[0.5], colors="red", linewidths=1.2)
    ax.axis("off")
    fig.savefig(out, format="png")
    plt.close(fig)


def _deliveries_table(deliveries: list[Delivery]) -> str:
    """Where the results went: one row per destination and file (the outbox)."""
    if not deliveries:
        return ""
    rows = "".join(
        f"<tr><td>{_e(d.destination)}</td><td>{_e(d.kind)}</td>"
        f"<td class='{_e(d.state.value)}'>{_e(d.state.value)}</td><td>{d.attempts}</td>"
        f"<td>{_e(d.delivered_at.strftime('%Y-%m-%d %H:%M:%S') if d.delivered_at else '')}</td>"
        f"<td>{_e(d.last_error)}</td></tr>"
        for d in deliveries
    )
    return (
        "<h2>Sent to</h2><table><tr><th>destination</th><th>result</th><th>state</th>"
        f"<th>attempts</th><th>delivered (UTC)</th><th>last error</th></tr>{rows}</table>"
    )


def register(app: FastAPI, db: Database) -> None:
    @app.get("/ui", include_in_schema=False, response_model=None)
    def ui_jobs(request: Request, _: str = Depends(require_key_or_cookie)) -> Any:
        if "api_key" in request.query_params:  # the middleware keeps it in a cookie
            return RedirectResponse("/ui", status_code=303)
        with db.session() as s:
            jobs = s.scalars(select(Job).order_by(Job.created_at.desc()).limit(200)).all()
        rows = "".join(
            f"<tr><td><a href='/ui/jobs/{_e(j.id)}'>{_e(j.id[:8])}</a></td>"
            f"<td>{_e(j.study_instance_uid)}</td><td class='{_e(j.state.value)}'>"
            f"{_e(j.state.value)}</td><td>{_e((j.summary or {}).get('n_detections'))}</td>"
            f"<td>{_e(j.created_at.strftime('%Y-%m-%d %H:%M:%S'))}</td><td>{_e(j.reason)}</td></tr>"
            for j in jobs
        )
        return _page(
            "CMB detection: jobs",
            "<table><tr><th>job</th><th>study</th><th>state</th><th>microbleeds</th>"
            f"<th>created (UTC)</th><th>reason</th></tr>{rows}</table>",
            refresh_s=10,
        )

    @app.get("/ui/jobs/{job_id}", include_in_schema=False)
    def ui_job(job_id: str, _: str = Depends(require_key_or_cookie)) -> HTMLResponse:
        with db.session() as s:
            job = s.get(Job, job_id)
            deliveries = list(
                s.scalars(select(Delivery).where(Delivery.job_id == job_id).order_by(Delivery.id))
            )
        if job is None:
            raise HTTPException(404, detail=f"no job {job_id}")
        summary = job.summary or {}
        dets = _detections(job)
        mars = summary.get("mars", {})
        mars_rows = "".join(
            f"<tr><td>{_e(c)}</td><td>{_e(mars.get(c, 0))}</td></tr>"
            for c in ("lobar", "deep", "infratentorial", "unknown")
            if c != "unknown" or mars.get(c)
        )
        det_rows = "".join(
            f"<tr><td>{_e(d['id'])}</td><td>{_e(', '.join(f'{c:.1f}' for c in d['center_lps_mm']))}"
            f"</td><td>{d['diameter_mm']:.1f}</td><td>{d['volume_mm3']:.1f}</td>"
            f"<td>{d['probability']:.2f}</td><td>{_e(d.get('region'))}</td><td>{_e(d.get('mars'))}</td></tr>"
            for d in dets
        )
        keys = "".join(
            f"<figure><img alt='microbleed {_e(d['id'])}' "
            f"src='/ui/jobs/{_e(job.id)}/key/{_e(d['id'])}.png'>"
            f"<figcaption>#{_e(d['id'])}</figcaption></figure>"
            for d in dets[:12]
        )
        body = (
            f"<p><a href='/ui'>all jobs</a></p><p>Study {_e(job.study_instance_uid)}<br>"
            f"State <b class='{_e(job.state.value)}'>{_e(job.state.value)}</b> {_e(job.reason)}<br>"
            f"Series {_e(summary.get('series_instance_uid'))}: "
            f"{_e(summary.get('selection_reason'))}</p>"
            f"<h2>MARS summary: {_e(summary.get('n_detections', 0))} microbleed(s)</h2>"
            f"<table><tr><th>category</th><th>count</th></tr>{mars_rows}</table>"
            "<h2>Microbleeds</h2><table><tr><th>#</th><th>centre LPS (mm)</th>"
            "<th>diameter (mm)</th><th>volume (mm³)</th><th>probability</th><th>region</th>"
            f"<th>MARS</th></tr>{det_rows}</table>"
            f"<h2>Key images</h2><div class='keys' style='display:flex;flex-wrap:wrap'>{keys}</div>"
            + _deliveries_table(deliveries)
        )
        return _page(f"Job {job.id[:8]}", body)

    @app.get("/ui/jobs/{job_id}/key/{det_id}.png", include_in_schema=False)
    def ui_key(job_id: str, det_id: int, _: str = Depends(require_key_or_cookie)) -> FileResponse:
        with db.session() as s:
            job = s.get(Job, job_id)
        if job is None or not job.result_dir:
            raise HTTPException(404, detail="no such result")
        det = next((d for d in _detections(job) if int(d["id"]) == det_id), None)
        if det is None:
            raise HTTPException(404, detail=f"no microbleed {det_id}")
        out = Path(job.result_dir) / f"key_{det_id}.png"
        if not out.is_file():
            try:
                render_key_image(db, job, det, out)
            except (FileNotFoundError, RuntimeError, KeyError) as e:
                log.warning("key image unavailable: %s", e, extra={"job_id": job_id})
                raise HTTPException(404, detail="key image unavailable") from e
        return FileResponse(out, media_type="image/png")
