"""`cmb detect INPUT... --out DIR`: files in, per-study results out, no server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cmb.progress import StageProgress

if TYPE_CHECKING:
    from model.pipeline import PipelineOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "detect",
        help="detect microbleeds in DICOM/NIfTI files (no server)",
        description=(
            "Read DICOM files, folders or zips (or NIfTI), choose the SWI/T2* series of each "
            "study, detect microbleeds and write OUT/<StudyInstanceUID>/detections.json, "
            "probability and label NIfTI maps and DICOM SEG/SR."
        ),
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: shipped)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for ONNX Runtime")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--threshold", type=float, default=None, help="override model threshold")
    p.add_argument(
        "--overlap",
        type=float,
        default=None,
        help="sliding-window overlap of the U-Net [0, 1) (default: the pipeline's, 0, as "
        "validated)",
    )
    p.add_argument(
        "--series",
        dest="series_uid",
        default=None,
        metavar="SERIES_UID",
        help="force this series instead of the selection rules' choice",
    )
    p.add_argument(
        "--outputs",
        default="seg,sr",
        help="DICOM outputs, comma separated from seg,sr,pdf,sc ('' for none)",
    )
    p.add_argument(
        "--location",
        choices=("auto", "onnx", "mri_synthseg", "off"),
        default="auto",
        help="location filter: our parcellation model (auto: when installed), "
        "FreeSurfer's mri_synthseg, or off",
    )
    p.add_argument(
        "--parcellation-model",
        type=Path,
        default=None,
        help="parcellation ONNX model (default: shipped)",
    )
    p.add_argument(
        "--classifier",
        choices=("auto", "on", "off"),
        default="auto",
        help="candidate classifier (second stage): auto runs the installed one behind the "
        "U-Net it was trained for, on runs it behind any U-Net, off skips it",
    )
    p.add_argument(
        "--classifier-model",
        type=Path,
        default=None,
        help="candidate classifier ONNX model (default: shipped)",
    )
    p.add_argument(
        "--classifier-threshold",
        type=float,
        default=None,
        help="classifier probability below which a candidate is rejected "
        "(default: the one stored in the classifier)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def pipeline_options(args: argparse.Namespace) -> PipelineOptions:
    """The pipeline's options from ``cmb detect``'s arguments (InputError if they are bad).

    An option left unset takes ``PipelineOptions``' own default, so the two cannot disagree.
    """
    from model.errors import InputError
    from model.pipeline import PipelineOptions

    outputs = tuple(o.strip() for o in args.outputs.split(",") if o.strip())
    unset = {"overlap": args.overlap}
    try:
        return PipelineOptions(
            model_path=args.model,
            device=args.device,
            threads=args.threads,
            tta=args.tta,
            threshold=args.threshold,
            series_uid=args.series_uid,
            outputs=outputs,
            location=args.location,
            parcellation_model_path=args.parcellation_model,
            classifier=args.classifier,
            classifier_model_path=args.classifier_model,
            classifier_threshold=args.classifier_threshold,
            **{k: v for k, v in unset.items() if v is not None},
        )
    except ValueError as e:
        raise InputError(str(e)) from e


def run(args: argparse.Namespace) -> int:
    from model.dicom_in import load_studies
    from model.errors import CmbError, InputError
    from model.pipeline import load_model, process_study

    options = pipeline_options(args)
    studies = load_studies(args.inputs)
    if not studies:
        raise InputError("no DICOM or NIfTI images in the inputs")
    model = load_model(options)
    failures = 0
    last_error: CmbError | None = None
    for study in studies:
        bar = StageProgress(enabled=not args.no_progress)
        try:
            out = process_study(study, args.out, options, model, progress=bar)
        except CmbError as e:
            bar.close()
            failures += 1
            last_error = e
            print(f"{study.study_instance_uid}: FAILED: {e}", file=sys.stderr)
            continue
        bar.close()
        res = out.result
        kept = len(res.kept)
        rejected = len(res.detections) - kept
        seconds = sum(res.timings_s.values())
        print(
            f"{res.study_instance_uid}: {kept} CMB(s) kept, {rejected} rejected, "
            f"series {res.series.series_instance_uid} ({res.series.sequence_kind.value}), "
            f"{seconds:.1f} s -> {out.folder}"
        )
    if failures:
        if failures == len(studies) and last_error is not None:
            return last_error.exit_code
        return 1
    return 0
