"""`cmb synth OUT --cases N --seed S`: synthetic SWI/T2* cases with microbleeds and mimics."""

from __future__ import annotations

import argparse
from pathlib import Path

# Vendor -> series_writer flavour per sequence (SWI case, T2* case).
DICOM_FLAVOURS = {
    "siemens": {"swi": "siemens_swi", "t2star": "siemens_t2star"},
    "philips": {"swi": "philips_swip", "t2star": "generic_t2star_2d"},
    "ge": {"swi": "ge_swan", "t2star": "generic_t2star_2d"},
    "generic": {"swi": "generic_t2star_2d", "t2star": "generic_t2star_2d"},
}


def parse_subjects(text: str) -> list[int]:
    """'1-16' or '1,3,5-7' -> sorted subject numbers."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.update(range(int(lo), int(hi) + 1))
        else:
            out.add(int(part))
    if not out:
        raise argparse.ArgumentTypeError(f"no subjects in {text!r}")
    return sorted(out)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate synthetic SWI/T2* cases with microbleeds (standardized layout)",
        description=(
            "Write OUT/images/<case>.nii.gz, OUT/labels/<case>.nii.gz (instance labels) and "
            "OUT/cases.jsonl (every sampled parameter, CMB and mimic). Same seed, same output. "
            "Subjects 17-20 are validation only (--split val)."
        ),
    )
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--cases", type=int, default=10, help="number of cases (default 10)")
    p.add_argument("--seed", type=int, default=0, help="first case's seed (case i uses seed+i)")
    p.add_argument(
        "--subjects",
        type=parse_subjects,
        default=None,
        help="subjects to draw from, e.g. 1-16 (default: 1-16 for train, 17-20 for val)",
    )
    p.add_argument("--split", choices=("train", "val"), default="train")
    p.add_argument("--sequence", choices=("swi", "t2star", "mixed"), default="mixed")
    p.add_argument("--n-cmbs", type=int, default=None, help="fix the number of microbleeds")
    p.add_argument(
        "--negative-every",
        type=int,
        default=0,
        metavar="K",
        help="cases whose seed is divisible by K get no microbleed (default: off)",
    )
    p.add_argument(
        "--draw-subject",
        action="store_true",
        help="draw each case's subject from its seed instead of cycling through --subjects",
    )
    p.add_argument(
        "--dicom",
        choices=sorted(DICOM_FLAVOURS),
        default=None,
        metavar="VENDOR",
        help="also write each case as a DICOM series: " + ", ".join(sorted(DICOM_FLAVOURS)),
    )
    p.add_argument(
        "--random-contrast",
        type=float,
        default=None,
        metavar="P",
        help="share of cases with random tissue contrast instead of the sequence's priors "
        "(default 0.2); no other parameter of a case changes with it",
    )
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.errors import CmbError
    from training.synth.anatomy import check_subject
    from training.synth.params import RANDOM_CONTRAST_SHARE
    from training.synth.writer import synthesize

    if args.cases < 1:
        raise CmbError("--cases must be >= 1")
    share = RANDOM_CONTRAST_SHARE if args.random_contrast is None else args.random_contrast
    if not 0.0 <= share <= 1.0:
        raise CmbError(f"--random-contrast must be within 0 and 1, got {share}")
    try:
        for s in args.subjects or []:
            check_subject(s, args.split)
    except ValueError as e:
        raise CmbError(str(e)) from e
    n = synthesize(
        args.out,
        cases=args.cases,
        seed=args.seed,
        subjects=args.subjects,
        split=args.split,
        sequence=args.sequence,
        n_cmbs=args.n_cmbs,
        dicom_flavours=DICOM_FLAVOURS[args.dicom] if args.dicom else None,
        workers=args.workers,
        progress=not args.no_progress,
        negative_every=args.negative_every,
        draw_subject=args.draw_subject,
        random_contrast=share,
    )
    print(f"wrote {n} cases to {args.out}")
    return 0
