"""A worker process for memory and scaling measurements (one fresh process per measurement).

``python -m bench.probe scaling MODEL D H W`` runs ``predict_probability`` +
``extract_candidates`` on an in-memory phantom of shape (D, H, W) at 1 mm and
prints one JSON line (seconds, CPU seconds, peak RSS).

``python -m bench.probe jobs MODEL STUDY_DIR N OUT`` loads the model once, as a
service worker does, then runs ``load_studies`` + ``process_study`` N times on
the same DICOM study and prints one JSON line per job (RSS after the job, peak
RSS so far, seconds): the leak check looks at the RSS trend across jobs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024.0


def peak_mib() -> float:
    return _status_kib("VmHWM") / 1024.0


def scaling(model_path: Path, shape: tuple[int, int, int]) -> None:
    from bench.common import phantom
    from model.candidates import extract_candidates
    from model.infer import predict_probability
    from model.onnx_model import OnnxModel

    model = OnnxModel.load(model_path, device="cpu")
    volume = phantom(shape, (1.0, 1.0, 1.0))
    base = rss_mib()
    c0, t0 = time.process_time(), time.perf_counter()
    prob = predict_probability(volume, model, overlap=0.5)
    t1 = time.perf_counter()
    threshold = float(sorted(prob.array.ravel()[:: max(1, prob.array.size // 100000)])[-2])
    extract_candidates(prob, threshold)
    t2 = time.perf_counter()
    print(
        json.dumps(
            {
                "shape": shape,
                "voxels": int(volume.array.size),
                "infer_s": t1 - t0,
                "candidates_s": t2 - t1,
                "total_s": t2 - t0,
                "cpu_s": time.process_time() - c0,
                "rss_before_mib": base,
                "peak_rss_mib": peak_mib(),
            }
        ),
        flush=True,
    )


def jobs(model_path: Path, study_dir: Path, n: int, out: Path) -> None:
    import gc

    import numpy as np

    from model.dicom_in import load_studies
    from model.onnx_model import OnnxModel
    from model.pipeline import PipelineOptions, detect_series, process_study

    model = OnnxModel.load(model_path, device="cpu")
    print(json.dumps({"job": 0, "rss_mib": rss_mib(), "peak_rss_mib": peak_mib()}), flush=True)
    threshold = None
    if "UNTRAINED" in model.metadata.name:  # uncalibrated: keep the top ~200 voxels
        (study,) = load_studies([study_dir])
        result, _ = detect_series(study, model, PipelineOptions())
        threshold = float(np.sort(result.probability.array, axis=None)[-200])
        del study, result
    options = PipelineOptions(outputs=("seg", "sr"), threshold=threshold)
    for i in range(1, n + 1):
        t0 = time.perf_counter()
        (study,) = load_studies([study_dir])
        process_study(study, out, options, model)
        del study
        gc.collect()
        print(
            json.dumps(
                {
                    "job": i,
                    "seconds": time.perf_counter() - t0,
                    "rss_mib": rss_mib(),
                    "peak_rss_mib": peak_mib(),
                }
            ),
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) == 5 and args[0] == "scaling":
        scaling(Path(args[1]), (int(args[2]), int(args[3]), int(args[4])))
        return 0
    if len(args) == 5 and args[0] == "jobs":
        jobs(Path(args[1]), Path(args[2]), int(args[3]), Path(args[4]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
