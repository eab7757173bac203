"""`cmb datasets import --format F SRC OUT`: standardize a real CMB dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("valdo", "dou", "nifti-pairs", "dicom-seg")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("datasets", help="import real datasets into the standardized layout")
    sub = p.add_subparsers(dest="datasets_command", metavar="ACTION")
    sub.required = True
    imp = sub.add_parser(
        "import",
        help="convert VALDO, Dou/CUHK, NIfTI pairs or DICOM+SEG to the standardized layout",
        description=(
            "Write the standardized layout (OUT/images, OUT/labels with instance labels, "
            "OUT/cases.jsonl). Images are never resampled (see docs/synthetic-data.md)."
        ),
    )
    imp.add_argument("--format", required=True, choices=FORMATS)
    imp.add_argument("src", type=Path, metavar="SRC")
    imp.add_argument("out", type=Path, metavar="OUT")
    imp.add_argument("--split", choices=("train", "val", "test"), default="train")
    imp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.datasets.importers import import_dataset

    n = import_dataset(args.format, args.src, args.out, split=args.split)
    print(f"imported {n} cases into {args.out}")
    return 0
