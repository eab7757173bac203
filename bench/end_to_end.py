"""End to end through the service: last instance received -> SEG + SR stored at a destination.

Run: ``nice -n 5 .venv/bin/python -m bench.end_to_end [--quick]``

``cmb serve`` (embedded worker, SQLite, the real pipeline) runs as a user
starts it; a dcmtk ``storescp`` is the destination (PACS); studies are sent
with dcmtk ``storescu`` (both with ``TCP_NODELAY=1``, see "Ingest").  For every
study:

* t_last: the exit of its ``storescu`` (every instance stored and answered);
* stability wait: job ``created_at`` (REST ``/jobs``, the moment the job is
  queued) minus t_last (under heavy load storescu's association release can
  lag the last stored instance, which shortens this, even below 0);
* latency: the moment the SR is complete at the destination (the outbox sends SEG, SR, then
  PDF; a study without findings has no SEG)
  minus ``created_at`` (so it excludes the stability wait and includes any
  queueing behind other studies);

for 1 study alone and for N studies sent back to back, with 1 and 2 worker
threads (``CMB_WORKER_CONCURRENCY``).  Throughput = N / (last result - first
send).  Studies are reduced SWI phantoms (see params) so that the run fits a
shared 2-core machine; per-study pipeline time at full size is in
``bench.pipeline_stages``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, Recorder, shipped_model, stats, untrained_model
from bench.ingest import NODELAY, _port_open, _wait, free_port
from bench.pipeline_stages import write_study

KEY = "0123456789abcdef0123"
STUDY = ((48, 192, 192), (1.5, 0.5, 0.5), "siemens_swi")
QUICK_STUDY = ((12, 64, 64), (1.5, 0.5, 0.5), "siemens_swi")
STABLE_AFTER_S = 2.0


def _get(url: str) -> Any:
    import httpx

    return httpx.get(url, headers={"X-API-Key": KEY}, timeout=10).json()


def _ts(iso: str) -> float:
    dt = datetime.fromisoformat(iso)
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def calibrated_untrained(path: Path, study_dir: Path) -> Path:
    """Untrained U-Net whose stored threshold keeps the top ~200 voxels of the bench study."""
    from model.dicom_in import load_studies
    from model.infer import predict_probability
    from model.onnx_model import OnnxModel
    from model.selection import select_series
    from training.export import set_metadata

    untrained_model(path)
    model = OnnxModel.load(path, device="cpu")
    (study,) = load_studies([study_dir])
    prob = predict_probability(select_series(study)[0].load_volume(), model).array
    threshold = float(np.sort(prob, axis=None)[-200])
    set_metadata(
        path, model.metadata.__class__(**{**model.metadata.__dict__, "threshold": threshold})
    )
    return path


def _has_sr(folder: Path) -> bool:
    """Whether a complete SR has arrived in one of storescp's study folders."""
    import pydicom
    import pydicom.errors

    for f in folder.iterdir():
        if f.name.startswith("."):
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (OSError, EOFError, ValueError, pydicom.errors.InvalidDicomError):
            continue  # a file storescp is still writing
        if ds.get("Modality") == "SR":
            return True
    return False


def scenario(
    model: Path, studies: list[Path], workers: int, tmp: Path, name: str
) -> dict[str, Any]:
    """Start a destination and `cmb serve`, send ``studies`` back to back, collect timings."""
    dest_dir = tmp / f"{name}_dest"
    dest_dir.mkdir(parents=True)
    dest_port, dicom_port, api_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMB_")}
    env.update(
        NODELAY,
        PYTHONPATH=str(REPO),
        CMB_API_KEYS=f"bench:{KEY}",
        CMB_POLL_INTERVAL_S="0.2",
        CMB_DISK_RESERVE_MB="0",
        CMB_DEVICE="cpu",
        CMB_EXPORT_BACKOFF_S="0.5",
        CMB_WORKER_CONCURRENCY=str(workers),
        CMB_LOG_LEVEL="WARNING",
    )
    logs = [open(tmp / f"{name}_{p}.log", "w") for p in ("dest", "serve")]  # noqa: SIM115
    dest = subprocess.Popen(
        ["storescp", "-aet", "PACS", "-od", str(dest_dir), "-su", "", "+xa", str(dest_port)],
        env=env,
        stdout=logs[0],
        stderr=logs[0],
    )
    serve_cmd = [
        sys.executable, "-m", "cmb.cli", "serve", "--data-dir", str(tmp / f"{name}_data"),
        "--dicom-port", str(dicom_port), "--ae-title", "CMB_AI",
        "--destination", f"PACS@127.0.0.1:{dest_port}", "--api-port", str(api_port),
        "--stable-after", str(STABLE_AFTER_S), "--model", str(model),
    ]  # fmt: skip
    serve = subprocess.Popen(serve_cmd, cwd=REPO, env=env, stdout=logs[1], stderr=logs[1])
    api = f"http://127.0.0.1:{api_port}"
    try:
        _wait(lambda: _port_open(dicom_port) and _port_open(dest_port), "cmb serve", 120)
        t_last: dict[str, float] = {}
        t_first = time.time()
        for study in studies:
            subprocess.run(
                ["storescu", "-aet", "MODALITY", "-aec", "CMB_AI", "+sd", "127.0.0.1",
                 str(dicom_port), str(study)],
                env=env, check=True, capture_output=True,
            )  # fmt: skip
            t_last[study.name] = time.time()
        done: dict[str, float] = {}
        deadline = time.time() + 3600
        while len(done) < len(studies) and time.time() < deadline:
            for sub in dest_dir.iterdir():
                # The SR is always sent, last; a study without findings has no SEG.
                if sub.name not in done and _has_sr(sub):
                    done[sub.name] = time.time()
            time.sleep(0.1)
        jobs = _get(f"{api}/jobs")["jobs"]
    finally:
        serve.terminate()
        dest.terminate()
        for p in (serve, dest):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()
    if len(done) < len(studies):
        raise RuntimeError(f"{name}: only {len(done)}/{len(studies)} results arrived")
    from model.dicom_in import load_studies

    uid_of = {p.name: load_studies([p])[0].study_instance_uid for p in studies}
    by_uid = {j["study_instance_uid"]: j for j in jobs}
    # storescp sub-folder names are "<prefix>_<StudyInstanceUID>"
    done_by_uid = {sub.split("_", 1)[-1]: t for sub, t in done.items()}
    rows = []
    for folder in studies:
        uid = uid_of[folder.name]
        job = by_uid[uid]
        created = _ts(job["created_at"])
        rows.append(
            {
                "stability_wait_s": created - t_last[folder.name],
                "latency_excl_stability_s": done_by_uid[uid] - created,
                "latency_from_storescu_exit_s": done_by_uid[uid] - t_last[folder.name],
                "run_s": _ts(job["finished_at"]) - _ts(job["started_at"]),
                "queue_s": _ts(job["started_at"]) - created,
            }
        )
    lat = [r["latency_excl_stability_s"] for r in rows]
    span = max(done.values()) - t_first
    return {
        "studies": len(studies),
        "workers": workers,
        "latency_p50_s": float(np.percentile(lat, 50)),
        "latency_p95_s": float(np.percentile(lat, 95)),
        "latency_s": stats(lat),
        "latency_from_storescu_exit_s": stats([r["latency_from_storescu_exit_s"] for r in rows]),
        "stability_wait_s": stats([r["stability_wait_s"] for r in rows]),
        "job_run_s": stats([r["run_s"] for r in rows]),
        "queue_s": stats([r["queue_s"] for r in rows]),
        "span_s": span,
        "studies_per_hour": 3600.0 * len(studies) / span,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--n", type=int, help="studies of the queued scenario")
    args = parser.parse_args(argv)
    quick = args.quick
    n = args.n or (2 if quick else 4)
    spec = QUICK_STUDY if quick else STUDY
    tmp = Path(tempfile.mkdtemp(prefix="bench_e2e_"))
    rec = Recorder("end_to_end", quick)
    studies = [write_study(tmp / "in", f"s{i}", spec, seed=100 + i) for i in range(n)]
    model = args.model or shipped_model()
    if model is None:
        model = calibrated_untrained(tmp / "untrained.onnx", studies[0])
        rec.notes.append(
            "UNTRAINED U-Net of the shipped architecture, threshold set to keep ~200 voxels"
        )
    rec.params = {
        "model": str(model),
        "study": {"shape": spec[0], "spacing_mm": spec[1], "flavour": spec[2]},
        "stable_after_s": STABLE_AFTER_S,
        "poll_interval_s": 0.2,
        "outputs": ["seg", "sr"],
        "queued_studies": n,
    }
    for workers in (1, 2):
        for batch in ([studies[0]], studies):
            name = f"{len(batch)}study_{workers}worker"
            rec.results[name] = scenario(model, batch, workers, tmp, name)
            print(name, {k: v for k, v in rec.results[name].items() if not isinstance(v, dict)})
    print(f"wrote {rec.write(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
