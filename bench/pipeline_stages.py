"""Whole pipeline per study: stage breakdown for a 3D SWI and a 2D T2* study written as DICOM.

Run: ``nice -n 5 .venv/bin/python -m bench.pipeline_stages [--quick]``

Each study is a head-like phantom written with ``model.series_writer.write_series``
(one classic MR file per slice, vendor headers) and run through the product
path: ``load_studies`` (header scan) -> ``process_study`` (select, read/decode,
resample + U-Net + resample back, candidates, NIfTI + SEG/SR/PDF writing).  The
product's own per-stage timings (``Result.timings_s``) are reported, plus the
resample/normalize part of "infer" measured on its own, and the location stage
(parcellation network + rules, ``model.location``) timed beside the pipeline,
which does not call it yet.

Without the trained model an UNTRAINED network of the same architecture is
used (time only); its probabilities are not calibrated, so the threshold is
set to keep the top ~200 voxels, which gives a realistic handful of
candidates for the candidate and SEG/SR stages (the count is reported).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Recorder, peak_rss_mib, phantom, shipped_model, stats, untrained_model

#: name -> (shape [slices, rows, cols], spacing mm [slice, row, col], writer flavour)
STUDIES: dict[str, tuple[tuple[int, int, int], tuple[float, float, float], str]] = {
    "swi_3d": ((96, 448, 384), (1.5, 0.5, 0.5), "siemens_swi"),
    "t2star_2d": ((28, 256, 232), (5.0, 0.9, 0.9), "generic_t2star_2d"),
}
QUICK_STUDIES = {
    "swi_3d": ((24, 96, 96), (1.5, 0.5, 0.5), "siemens_swi"),
    "t2star_2d": ((8, 64, 64), (5.0, 0.9, 0.9), "generic_t2star_2d"),
}


def write_study(root: Path, name: str, spec: tuple[Any, Any, str], seed: int) -> Path:
    from model.series_writer import StudyMeta, write_series

    shape, spacing, flavour = spec
    volume = phantom(shape, spacing, n_spots=15, seed=seed)
    folder = root / name
    write_series(volume, folder, flavour=flavour, study=StudyMeta.synthetic(seed), seed=seed)
    return folder


def location_stage(study_dir: Path, probability_model: Any, tmp: Path) -> dict[str, Any]:
    """Time parcellation + location rules on the study's volume (untrained parcellation net)."""
    from model.candidates import extract_candidates
    from model.dicom_in import load_studies
    from model.infer import predict_probability
    from model.location import locate_and_filter
    from model.location.parcellation import load_parcellation_model, parcellate_onnx
    from model.onnx_model import default_model_path
    from model.selection import select_series

    try:
        path = default_model_path("parcellation")
        label = "shipped parcellation model"
    except Exception:  # ModelError: not shipped yet -> an untrained one of the same design
        from training.parcellation.export import export_parcellation, parcellation_metadata
        from training.parcellation.network import build_parcellation_network

        path = export_parcellation(
            build_parcellation_network().eval(), parcellation_metadata(), tmp / "parc.onnx"
        )
        label = "UNTRAINED parcellation network (timing only)"
    (study,) = load_studies([study_dir])
    series, _ = select_series(study)
    volume = series.load_volume()
    prob = predict_probability(volume, probability_model, overlap=0.0)
    threshold = float(np.sort(prob.array, axis=None)[-200])
    labels, detections = extract_candidates(prob, threshold)
    model = load_parcellation_model(path, "cpu")
    t0 = time.perf_counter()
    parc = parcellate_onnx(volume, model)
    t1 = time.perf_counter()
    locate_and_filter(detections, labels, parc, series.info)
    t2 = time.perf_counter()
    return {
        "model": label,
        "parcellate_s": t1 - t0,
        "rules_s": t2 - t1,
        "n_candidates": len(detections),
    }


class Clock:
    """Wall and process-CPU seconds of named stages."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def time(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn(*args, **kwargs)
        self.wall[name] = time.perf_counter() - t0
        self.cpu[name] = time.process_time() - c0
        return out


def staged_run(
    study_dir: Path, model: Any, threshold: float | None, out: Path
) -> tuple[Clock, int]:
    """The product's stages called one by one (the calls ``process_study`` makes), timed."""
    from model.candidates import extract_candidates
    from model.dicom_in import load_studies
    from model.dicom_out import write_outputs
    from model.infer import sliding_window
    from model.pipeline import PipelineOptions, detect_series
    from model.preprocess import prepare, resample_like
    from model.selection import select_series
    from model.volume import write_nifti

    c = Clock()
    (study,) = c.time("load_studies (header scan)", load_studies, [study_dir])
    series, _ = c.time("select", select_series, study)
    volume = c.time("read/decode", series.load_volume)
    prepared = c.time("resample+normalize", prepare, volume, model.metadata)
    probs = c.time(
        "unet_sliding_window", sliding_window, prepared.array, model, channels=slice(-1, None)
    )
    c.time("resample_back", resample_like, prepared.with_array(probs[0]), volume, order=1)
    # The rest works on the product's own Result (same probability as above).
    result, series = detect_series(study, model, PipelineOptions(threshold=threshold))
    th = threshold if threshold is not None else model.metadata.threshold
    c.time("candidates", extract_candidates, result.probability, th)
    out.mkdir(parents=True, exist_ok=True)
    c.time("write_nifti", write_nifti, result.probability, out / "probability.nii.gz")
    sources = series.source_datasets()
    for kind in ("seg", "sr", "pdf"):
        c.time(f"write_{kind}", write_outputs, result, sources, out / kind, (kind,))
    return c, len(result.detections)


def product_run(study_dir: Path, model: Any, threshold: float | None, out: Path) -> dict:
    """``load_studies`` + ``process_study`` as ``cmb detect`` runs them (wall, CPU, stages)."""
    from model.dicom_in import load_studies
    from model.pipeline import PipelineOptions, process_study

    options = PipelineOptions(threshold=threshold, outputs=("seg", "sr", "pdf"))
    c0, t0 = time.process_time(), time.perf_counter()
    (study,) = load_studies([study_dir])
    outputs = process_study(study, out, options, model)
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "result_timings_s": outputs.result.timings_s,
        "n_detections": len(outputs.result.detections),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--studies", nargs="*", help="subset of the study names")
    args = parser.parse_args(argv)

    from model.onnx_model import OnnxModel

    quick = args.quick
    repeats = args.repeats or (1 if quick else 2)
    specs = QUICK_STUDIES if quick else STUDIES
    if args.studies:
        specs = {k: v for k, v in specs.items() if k in args.studies}
    rec = Recorder("pipeline_stages", quick)
    tmp = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    model_path = args.model or shipped_model()
    trained = model_path is not None
    if model_path is None:
        model_path = untrained_model(tmp / "untrained.onnx")
        rec.notes.append("UNTRAINED U-Net of the shipped architecture: timings only")
    model = OnnxModel.load(model_path, device="cpu")
    rec.params = {
        "model": str(model_path),
        "model_trained": trained,
        "ort_threads": "ONNX Runtime default (physical cores)",
        "overlap": 0.5,
        "tta": False,
        "outputs": ["nifti", "seg", "sr", "pdf"],
        "repeats": repeats,
        "studies": {
            k: {"shape": v[0], "spacing_mm": v[1], "flavour": v[2], "instances": v[0][0]}
            for k, v in specs.items()
        },
    }
    for i, (name, spec) in enumerate(specs.items()):
        study_dir = write_study(tmp / "in", name, spec, seed=i)
        threshold: float | None = None
        if not trained:
            from model.dicom_in import load_studies
            from model.infer import predict_probability
            from model.selection import select_series

            (study,) = load_studies([study_dir])
            vol = select_series(study)[0].load_volume()
            prob = predict_probability(vol, model, overlap=0.0).array
            threshold = float(np.sort(prob, axis=None)[-200])
        staged = [
            staged_run(study_dir, model, threshold, tmp / f"st_{name}") for _ in range(repeats)
        ]
        product = [product_run(study_dir, model, threshold, tmp / "out") for _ in range(repeats)]
        walls = [p["wall_s"] for p in product]
        entry: dict[str, Any] = {
            "stages_wall_s": {k: stats([c.wall[k] for c, _ in staged]) for k in staged[0][0].wall},
            "stages_cpu_s": {k: stats([c.cpu[k] for c, _ in staged]) for k in staged[0][0].cpu},
            "product_process_study": product,
            "product_total_wall_s": stats(walls),
            "product_total_cpu_s": stats([p["cpu_s"] for p in product]),
            "n_detections": staged[-1][1],
            "threshold": threshold,
            "target_60s_met_wall": statistics.median(walls) <= 60.0,
        }
        try:
            entry["location"] = location_stage(study_dir, model, tmp)
        except Exception as e:  # model.location is in progress: record why, keep the rest
            entry["location"] = f"not measured: {type(e).__name__}: {e}"
        rec.results[name] = entry
        print(name, {k: round(v["median"], 2) for k, v in entry["stages_wall_s"].items()})
        print(name, "product wall", [round(w, 1) for w in walls])
    rec.results["peak_rss_mib_process"] = peak_rss_mib()
    print(f"wrote {rec.write(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
