"""Whole pipeline per study: stage breakdown for a 3D SWI and a 2D T2* study written as DICOM.

Run: ``nice -n 5 .venv/bin/python -m bench.pipeline_stages [--quick]``

Each study is a head-like phantom written with ``model.series_writer.write_series``
(one classic MR file per slice, vendor headers) and run through the product
path as ``cmb detect`` runs it: ``load_studies`` (header scan) ->
``process_study`` (select, read/decode, resample + U-Net + resample back,
candidates, NIfTI + SEG/SR/PDF writing), timed in wall and process-CPU
seconds, with the product's own stage timings (``Result.timings_s``).  The
"infer" stage is split by timing its resample/normalize (``prepare``) and
resample-back steps on their own; the "write" stage by writing NIfTI, SEG, SR
and PDF one at a time from the same Result.  The location stage (parcellation
network + rules, ``model.location``) is part of the product run when a
parcellation model is installed (the phantom is no brain, so its rules' outcome
means nothing here, only its time); it is also timed beside it on every
U-Net candidate.  Each study costs one full sliding-window inference per repeat
(plus one at overlap 0 for the threshold), to keep the run short on a shared
machine.

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


def parcellation_model(tmp: Path) -> tuple[Path, str]:
    from model.onnx_model import default_model_path

    try:
        return default_model_path("parcellation"), "shipped parcellation model"
    except Exception:  # ModelError: not shipped yet -> an untrained one of the same design
        from training.parcellation.export import export_parcellation, parcellation_metadata
        from training.parcellation.network import build_parcellation_network

        path = export_parcellation(
            build_parcellation_network().eval(), parcellation_metadata(), tmp / "parc.onnx"
        )
        return path, "UNTRAINED parcellation network (timing only)"


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


def product_run(study_dir: Path, model: Any, threshold: float | None, out: Path) -> dict:
    """``load_studies`` + ``process_study`` as ``cmb detect`` runs them (wall, CPU, stages)."""
    from model.dicom_in import load_studies
    from model.pipeline import PipelineOptions, process_study

    options = PipelineOptions(threshold=threshold, outputs=("seg", "sr", "pdf"))
    c0, t0 = time.process_time(), time.perf_counter()
    (study,) = load_studies([study_dir])
    t1 = time.perf_counter()
    outputs = process_study(study, out, options, model)
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "stages_s": {"load_studies": t1 - t0, **outputs.result.timings_s},
        "n_detections": len(outputs.result.detections),
    }


def side_stages(
    study_dir: Path, model: Any, threshold: float | None, tmp: Path
) -> tuple[Clock, float, dict[str, Any]]:
    """The splits of "infer" and "write", the untrained threshold, and the location stage."""
    from model.candidates import extract_candidates
    from model.dicom_in import load_studies
    from model.dicom_out import write_outputs
    from model.infer import predict_probability
    from model.location import locate_and_filter
    from model.location.parcellation import load_parcellation_model, parcellate_onnx
    from model.pipeline import PipelineOptions, detect_series
    from model.preprocess import prepare, resample_like
    from model.selection import select_series
    from model.volume import write_nifti

    c = Clock()
    (study,) = load_studies([study_dir])
    series, _ = select_series(study)
    volume = series.load_volume()
    prepared = c.time("infer: resample+normalize", prepare, volume, model.metadata)
    c.time("infer: resample back", resample_like, prepared, volume, order=1)
    # One cheap pass (overlap 0) for the untrained threshold and the location stage.
    prob = predict_probability(volume, model, overlap=0.0)
    if threshold is None and "UNTRAINED" in model.metadata.name:
        threshold = float(np.sort(prob.array, axis=None)[-200])
    th = threshold if threshold is not None else model.metadata.threshold
    labels, detections = extract_candidates(prob, th)
    location: dict[str, Any] = {}
    try:
        path, label = parcellation_model(tmp)
        parc_model = load_parcellation_model(path, "cpu")
        parc = c.time("location: parcellation", parcellate_onnx, volume, parc_model)
        rules_args = (detections, labels, parc, series.info)
        c.time("location: rules", locate_and_filter, *rules_args, image=volume)
        location = {"model": label, "n_candidates": len(detections)}
    except Exception as e:  # model.location is in progress: record why, keep the rest
        location = {"error": f"{type(e).__name__}: {e}"}
    # The write stage, one output at a time, from a Result of the product path.
    result, series = detect_series(study, model, PipelineOptions(threshold=th, overlap=0.0))
    out = tmp / f"w_{study_dir.name}"
    out.mkdir(parents=True, exist_ok=True)
    sources = series.source_datasets()
    c.time("write: nifti", write_nifti, result.probability, out / "probability.nii.gz")
    for kind in ("seg", "sr", "pdf"):
        c.time(f"write: {kind}", write_outputs, result, sources, out / kind, (kind,))
    return c, th, location


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
    repeats = args.repeats or 1
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
        side, threshold, location = side_stages(study_dir, model, None, tmp)
        # a trained model runs as shipped: its own threshold, and the candidate classifier
        # (when installed) at its candidate threshold
        product_threshold = None if trained else threshold
        product = [
            product_run(study_dir, model, product_threshold, tmp / "out") for _ in range(repeats)
        ]
        walls = [p["wall_s"] for p in product]
        entry: dict[str, Any] = {
            "product_total_wall_s": stats(walls),
            "product_total_cpu_s": stats([p["cpu_s"] for p in product]),
            "product_stages_s": {
                k: stats([p["stages_s"][k] for p in product]) for k in product[0]["stages_s"]
            },
            "split_wall_s": side.wall,
            "split_cpu_s": side.cpu,
            "location": location,
            "n_detections": product[-1]["n_detections"],
            "threshold": threshold if not trained else None,
            "target_60s_met_wall": statistics.median(walls) <= 60.0,
        }
        rec.results[name] = entry
        print(name, "wall", [round(w, 1) for w in walls], "stages", product[-1]["stages_s"])
        print(name, "split", {k: round(v, 2) for k, v in side.wall.items()})
    rec.results["peak_rss_mib_process"] = peak_rss_mib()
    print(f"wrote {rec.write(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
