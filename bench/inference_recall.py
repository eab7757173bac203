"""Inference settings against recall: window overlap and flip TTA, time and detection metrics.

Run: ``nice -n 5 .venv/bin/python -m bench.inference_recall [--quick]``

Needs the trained model (model/weights/cmb_unet.onnx, or ``--model``); without
it the script records "not measured" and exits 0, unless ``--allow-untrained``
(used by the smoke test, numbers meaningless).  Cases: the first ``--cases``
held-out synthetic validation cases (subjects 17-20) of a standardized layout
folder (default ``runs/data/val``, written by ``training.synth``); each case
image is run through ``model.pipeline.detect_series`` for every setting
(interleaved per case), and its detections are scored with
``evaluation.api.evaluate_cases`` against the layout's truth.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, Recorder, shipped_model, stats, untrained_model

SETTINGS = {
    "overlap_0.0": (0.0, False),
    "overlap_0.0_tta": (0.0, True),
    "overlap_0.25": (0.25, False),
    "overlap_0.5": (0.5, False),
    "overlap_0.5_tta": (0.5, True),
}
QUICK_SETTINGS = {"overlap_0.0": (0.0, False)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--truth", type=Path, default=REPO / "runs" / "data" / "val")
    parser.add_argument("--cases", type=int)
    parser.add_argument("--allow-untrained", action="store_true")
    parser.add_argument(
        "--settings", nargs="+", choices=sorted(SETTINGS), help="subset of the settings"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    rec = Recorder("inference_recall", quick)
    tmp = Path(tempfile.mkdtemp(prefix="bench_recall_"))
    model_path = args.model or shipped_model()
    if model_path is None and not (args.allow_untrained or quick):
        rec.results["status"] = "not measured: no trained model (model/weights/cmb_unet.onnx)"
        print(rec.results["status"], "; wrote", rec.write(args.out))
        return 0
    if model_path is None:
        model_path = untrained_model(tmp / "untrained.onnx", threshold=0.9)
        rec.notes.append("UNTRAINED model: the metrics below are meaningless (smoke run)")
    if quick and not (args.truth / "cases.jsonl").is_file():
        args.truth = make_truth(tmp / "truth")
    from evaluation.api import evaluate_cases
    from evaluation.io import load_predictions, load_truth
    from model.dicom_in import load_studies
    from model.onnx_model import OnnxModel
    from model.pipeline import PipelineOptions, detect_series

    truth_all = load_truth(args.truth)
    ids = sorted(truth_all)[: args.cases or (1 if quick else 3)]
    truth = {i: truth_all[i] for i in ids}
    settings = QUICK_SETTINGS if quick else SETTINGS
    if args.settings:
        settings = {k: SETTINGS[k] for k in args.settings}
    model = OnnxModel.load(model_path, device="cpu")
    rec.params = {
        "model": str(model_path),
        "truth": str(args.truth),
        "cases": ids,
        "settings": {k: {"overlap": o, "tta": t} for k, (o, t) in settings.items()},
    }
    times: dict[str, list[float]] = {k: [] for k in settings}
    for case_id in ids:
        image = args.truth / "images" / f"{case_id}.nii.gz"
        (study,) = load_studies([image])
        for name, (overlap, tta) in settings.items():
            t0 = time.perf_counter()
            result, _ = detect_series(study, model, PipelineOptions(overlap=overlap, tta=tta))
            times[name].append(time.perf_counter() - t0)
            folder = tmp / name / case_id
            folder.mkdir(parents=True)
            (folder / "detections.json").write_text(json.dumps(result.to_json()))
    metrics: dict[str, Any] = {}
    for name in settings:
        res = evaluate_cases(truth, load_predictions(tmp / name))
        metrics[name] = res.metrics["detection"]["global"]
    rec.results["seconds_per_case"] = {k: stats(v) for k, v in times.items()}
    rec.results["detection_global"] = metrics
    print({k: v.get("recall") for k, v in metrics.items()}, "; wrote", rec.write(args.out))
    return 0


def make_truth(folder: Path) -> Path:
    """One small held-out synthetic case in the standardized layout (smoke runs only)."""
    from training.datasets.layout import finalize, write_case
    from training.synth.engine import generate_case

    case = generate_case(100001, split="val", sequence="t2star", n_cmbs=3)
    write_case(folder, case)
    finalize(folder)
    return folder


if __name__ == "__main__":
    raise SystemExit(main())
