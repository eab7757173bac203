"""`cmb export CHECKPOINT --out FILE.onnx`: a checkpoint to a self-describing ONNX model."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a training checkpoint to ONNX with its metadata (needs `training`)",
        description=(
            "Export CHECKPOINT (from cmb train) to ONNX with dynamic spatial dimensions and the "
            "model's plan in its metadata: spacing, patch size, normalization, threshold chosen "
            "on validation, labels, version, config hash and validation metrics."
        ),
    )
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT")
    p.add_argument("--out", required=True, type=Path, help="output .onnx file")
    p.add_argument(
        "--threshold", type=float, default=None, help="override the threshold chosen on validation"
    )
    p.add_argument(
        "--val-data",
        nargs="+",
        default=None,
        metavar="DIR",
        help="validate the exported file on these dataset folders and embed the "
        "threshold and metrics found there",
    )
    p.add_argument(
        "--overlap",
        type=float,
        default=None,
        help="sliding-window overlap for --val-data (default: the config's)",
    )
    p.add_argument(
        "--predictions",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --val-data: keep each case's candidates as DIR/<case_id>/detections.json "
        "(the input of cmb evaluate)",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads for validation")
    p.add_argument("--workers", type=int, default=1, help="validation processes (one model each)")
    p.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=None,
        help="thresholds tried with --val-data (default: the config's val.thresholds)",
    )
    p.add_argument(
        "--max-fp-per-scan",
        type=float,
        default=None,
        help="with --val-data: the threshold is the highest recall at no more false positives "
        "per scan than this (default: the training config's val.max_fp_per_scan)",
    )
    p.add_argument(
        "--metrics-json",
        type=Path,
        default=None,
        help="validation report (default: <out>.metrics.json)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.errors import InputError

    try:
        from training.export import export_checkpoint
    except ImportError as e:
        raise InputError(
            f"export needs the `training` extra (torch, monai): pip install '.[training]' ({e})"
        ) from e
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise InputError(f"--threshold must be in (0, 1), got {args.threshold}")
    if args.max_fp_per_scan is not None and args.max_fp_per_scan <= 0:
        raise InputError(f"--max-fp-per-scan must be positive, got {args.max_fp_per_scan}")
    try:
        path = export_checkpoint(
            args.checkpoint,
            args.out,
            threshold=args.threshold,
            metrics_json=args.metrics_json,
            val_dirs=args.val_data or (),
            overlap=args.overlap,
            predictions_dir=args.predictions,
            threads=args.threads,
            workers=args.workers,
            thresholds=args.thresholds,
            max_fp_per_scan=args.max_fp_per_scan,
        )
    except FileNotFoundError as e:  # a config, dataset or checkpoint that is not there
        # (one training cannot use is a TrainingInputError, an InputError, already; any
        # other ValueError is a bug and shows as one)
        raise InputError(str(e)) from e
    print(f"exported {path}")
    return 0
