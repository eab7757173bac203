"""Memory: peak RSS of a worker per study size, and RSS across repeated jobs (leak check).

Run: ``nice -n 5 .venv/bin/python -m bench.memory [--quick]``

Each measurement is a fresh worker process (``bench.probe jobs``) that loads
the model once, as ``cmb worker`` does, then runs ``load_studies`` +
``process_study`` (SEG + SR) on a DICOM study written with
``write_series``.  Peak RSS is the kernel's high-water mark (VmHWM).  The leak
check runs many jobs on one small study in one worker and fits a line to the
RSS after each job (the first jobs warm caches, so the fit skips them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, Recorder, shipped_model, untrained_model
from bench.pipeline_stages import write_study

SIZES = {
    "t2star_2d": ((28, 256, 232), (5.0, 0.9, 0.9), "generic_t2star_2d"),
    "swi_3d_typical": ((96, 448, 384), (1.5, 0.5, 0.5), "siemens_swi"),
}
QUICK_SIZES = {"swi_small": ((16, 96, 96), (1.5, 0.5, 0.5), "siemens_swi")}
LEAK_STUDY = ((40, 192, 192), (1.5, 0.5, 0.5), "siemens_swi")
QUICK_LEAK_STUDY = ((12, 64, 64), (1.5, 0.5, 0.5), "siemens_swi")


def run_jobs(model: Path, study: Path, n: int, out: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.probe", "jobs", str(model), str(study), str(n), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise RuntimeError(f"worker failed: {proc.stderr[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--jobs", type=int, help="jobs of the leak check")
    parser.add_argument(
        "--leak-shape",
        type=int,
        nargs=3,
        metavar=("SLICES", "ROWS", "COLS"),
        help="study of the leak check (default 40 192 192 at 1.5 x 0.5 x 0.5 mm)",
    )
    parser.add_argument("--leak-only", action="store_true", help="skip the peak-RSS-per-size part")
    args = parser.parse_args(argv)
    quick = args.quick
    n_jobs = args.jobs or (4 if quick else 12)
    tmp = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    rec = Recorder("memory", quick)
    model = args.model or shipped_model()
    if model is None:
        model = untrained_model(tmp / "untrained.onnx")
        rec.notes.append("UNTRAINED U-Net of the shipped architecture (memory and time only)")
    sizes = {} if args.leak_only else (QUICK_SIZES if quick else SIZES)
    leak_spec = QUICK_LEAK_STUDY if quick else LEAK_STUDY
    if args.leak_shape:
        leak_spec = (tuple(args.leak_shape), leak_spec[1], leak_spec[2])
    rec.params = {
        "model": str(model),
        "sizes": {k: {"shape": v[0], "spacing_mm": v[1]} for k, v in sizes.items()},
        "leak_study": {"shape": leak_spec[0], "spacing_mm": leak_spec[1], "jobs": n_jobs},
        "outputs": ["nifti", "seg", "sr"],
    }
    per_size: dict[str, Any] = {}
    for i, (name, spec) in enumerate(sizes.items()):
        study = write_study(tmp / "in", name, spec, seed=i)
        rows = run_jobs(model, study, 1, tmp / "out")
        per_size[name] = {
            "voxels": int(np.prod(spec[0])),
            "model_loaded_rss_mib": rows[0]["rss_mib"],
            "peak_rss_mib": rows[-1]["peak_rss_mib"],
            "job_s": rows[-1]["seconds"],
            "within_3gb": rows[-1]["peak_rss_mib"] <= 3 * 1024,
        }
        print(name, per_size[name])
    if per_size:
        rec.results["per_size"] = per_size

    study = write_study(tmp / "in", "leak", leak_spec, seed=99)
    rows = run_jobs(model, study, n_jobs, tmp / "out")
    jobs = [r for r in rows if r["job"] > 0]
    skip = min(3, max(0, len(jobs) - 2))
    x = np.array([r["job"] for r in jobs[skip:]], dtype=float)
    y = np.array([r["rss_mib"] for r in jobs[skip:]], dtype=float)
    slope = float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else float("nan")
    rec.results["leak_check"] = {
        "rss_after_job_mib": [round(r["rss_mib"], 1) for r in rows],
        "peak_rss_mib": rows[-1]["peak_rss_mib"],
        "job_s_median": float(np.median([r["seconds"] for r in jobs])),
        "fit_skips_first_jobs": skip,
        "rss_slope_mib_per_job": slope,
        "growth_first_to_last_mib": jobs[-1]["rss_mib"] - jobs[skip]["rss_mib"],
    }
    print("leak", rec.results["leak_check"])
    print(f"wrote {rec.write(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
