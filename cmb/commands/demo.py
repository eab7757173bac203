"""`cmb demo`: a synthetic SWI study through the whole detection path, on embedded defaults.

Writes a synthetic SWI study (from a held-out SynthSeg subject, with known
microbleeds) as Siemens-style DICOM next to a phase distractor series, runs
`cmb detect`'s pipeline on the folder with the shipped model, compares what it
found with the ground truth and prints where every output is.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run a synthetic SWI study through detection and print where the outputs are",
    )
    p.add_argument("--out", type=Path, default=Path("cmb-demo"), help="output folder")
    p.add_argument("--seed", type=int, default=7, help="seed of the synthetic case")
    p.add_argument("--cmbs", type=int, default=6, help="number of microbleeds to place")
    p.add_argument("--subject", type=int, default=17, help="SynthSeg subject (17-20: held out)")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: shipped)")
    p.add_argument(
        "--service",
        action="store_true",
        help="go through the DICOM service instead: start it locally, send the study by "
        "C-STORE, wait for SEG + SR at a stand-in PACS (docs/service.md)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from model.pipeline import PipelineOptions, process
    from model.series_writer import StudyMeta, write_series
    from training.synth import generate_case

    out: Path = args.out
    study_dir = out / "study"
    print(f"1/3 generating a synthetic SWI case (subject {args.subject}, seed {args.seed}) ...")
    case = generate_case(
        args.seed, subject=args.subject, sequence="swi", split="val", n_cmbs=args.cmbs
    )
    acq = case.record.get("acquisition", {})
    study = StudyMeta.synthetic(seed=args.seed)
    write_series(
        case.image,
        study_dir / "swi",
        flavour="siemens_swi",
        kind="magnitude",
        study=study,
        series_number=5,
        echo_time_ms=acq.get("echo_time_ms"),
        field_strength_t=acq.get("field_strength_t"),
        seed=args.seed,
    )
    # A distractor the series selection must ignore: the phase series of the same scan.
    rng = np.random.default_rng(args.seed)
    phase = rng.normal(0.0, 0.3, case.image.shape).astype(np.float32)
    write_series(
        case.image.with_array(phase),
        study_dir / "phase",
        flavour="siemens_swi",
        kind="phase",
        study=study,
        series_number=6,
        echo_time_ms=acq.get("echo_time_ms"),
        field_strength_t=acq.get("field_strength_t"),
        seed=args.seed + 1,
    )
    truth_path = out / "truth.json"
    truth_path.write_text(json.dumps(case.record, indent=2) + "\n")
    print(f"    DICOM study: {study_dir}  ({len(case.record.get('cmbs', []))} true CMBs)")

    if args.service:
        return _run_service(study_dir, out, args.model)

    print("2/3 detecting (shipped model, CPU unless CUDA is present) ...")
    results = process([study_dir], out / "results", PipelineOptions(model_path=args.model))

    print("3/3 results")
    for res in results:
        kept = res.result.kept
        truth = [np.asarray(c["center_lps_mm"]) for c in case.record.get("cmbs", [])]
        found = sum(
            1
            for t in truth
            if any(np.linalg.norm(np.asarray(d.center_lps_mm) - t) <= 5.0 for d in kept)
        )
        print(f"    series used: {res.result.selection.chosen} ({res.result.selection.reason})")
        print(f"    {len(kept)} CMB(s) reported; {found}/{len(truth)} true CMBs found within 5 mm")
        for kind, path in sorted(res.files.items()):
            print(f"    {kind:12s} {path}")
    print(f"    ground truth {truth_path}")
    return 0


def _run_service(study_dir: Path, out: Path, model: Path | None) -> int:
    """Steps 2-3 through `cmb serve`'s parts on loopback (service.demo.run_local)."""
    from service.demo import run_local

    print("2/3 starting the service locally and sending the study by C-STORE ...")
    run = run_local(
        study_dir, out / "service", model_path=model, progress=lambda m: print("    " + m)
    )
    print("3/3 results")
    print(f"    job {run.job_id}: {run.state}" + (f" ({run.reason})" if run.reason else ""))
    print(f"    {run.summary.get('n_detections', 0)} CMB(s) reported")
    for path in run.received:
        print(f"    received by the stand-in PACS: {path}")
    print(f"    service data (spool, results, SQLite DB): {run.data_dir}")
    print(f"    start it again with: cmb serve --data-dir {run.data_dir}  (web page: /ui)")
    return 0 if run.state == "delivered" else 1
