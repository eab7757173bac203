"""`cmb evaluate`: compare predictions with a reference and write a report (docs/evaluation.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate detections against a reference (metrics.json, per_cmb.csv, report)",
        description=(
            "Match predicted to true CMBs one-to-one and write metrics.json, per_cmb.csv, "
            "report.md/.html and PNG plots into --out; print a one-table summary."
        ),
    )
    p.add_argument("--pred", required=True, type=Path, help="folder of <case>/detections.json")
    p.add_argument(
        "--truth",
        required=True,
        type=Path,
        nargs="+",
        help="dataset folder with cases.jsonl, or point annotations (JSON file or folder); "
        "several are pooled (their case ids must differ)",
    )
    p.add_argument("--out", required=True, type=Path, help="report folder (created)")
    p.add_argument(
        "--match",
        default="center:5",
        help="center[:R mm] | size-aware[:F] | overlap[:IoU] | valdo[:R mm] (default center:5)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="count only predictions with probability >= T (default: every kept detection)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: no CI)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--split", default=None, help="only truth cases of this split (cases.jsonl)")
    p.add_argument(
        "--include-rejected",
        action="store_true",
        help="also count detections rejected by the location filter as predictions",
    )
    p.add_argument("--no-masks", action="store_true", help="skip label maps (no Dice/volumes)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from evaluation.api import EvaluationConfig, evaluate
    from evaluation.matching import MatchRule
    from evaluation.report import summary_table, write_report
    from model.errors import InputError

    try:
        rule = MatchRule.parse(args.match)
        config = EvaluationConfig(
            rule=rule,
            threshold=args.threshold,
            include_rejected=args.include_rejected,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
            use_masks=not args.no_masks,
            progress=sys.stderr.isatty(),
        )
    except ValueError as e:
        raise InputError(str(e)) from e
    result = evaluate(args.pred, args.truth, config, split=args.split)
    files = write_report(result, args.out)
    print(summary_table(result).text())
    print(f"\nwrote {len(files)} files to {args.out}")
    return 0
