"""Two U-Net grids' kept candidates joined: would running the U-Net on both pay?

On a 0.7 mm grid the U-Net's candidates hold more of the small CMBs than on
its own 1 mm grid, but the product path keeps fewer of the large ones there
(docs/model-card.md, "The shipped files on a 0.7 mm U-Net grid").  This tool
answers, from two :mod:`training.parcellation.filter_effect` runs of the same
cases (one per grid, ``--min-score`` low enough for the thresholds swept),
what the union of both grids' kept candidates would find, before any product
code runs the U-Net twice.

Per case, the first grid's candidates kept by the default location rules at
classifier threshold ``t1`` are joined by the second grid's kept at ``t2``,
except those lying within the larger of the two radii plus ``gap_mm`` of a
first-grid one already joined (the same object seen twice: the classifier
scores a cube cut around the candidate's centre, so both copies score
alike).  The joined list is matched to the truth by the evaluation package's
default rule.  A threshold of ``None`` ("off") takes nothing from that grid,
so each grid alone is in the same table.

    python -m training.parcellation.grid_union --first runs/fe_ship/select90 \\
        --second runs/fe_g07/select90              # sweep; the pair the export rule picks
    python -m training.parcellation.grid_union --first runs/fe_ship/val \\
        --second runs/fe_g07/val --at 0.68 0.9     # one pair, on a set not chosen on
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from evaluation.cases import PredCMB, TruthCMB, parse_cmbs
from evaluation.matching import match_case
from training.parcellation.filter_effect import MAX_FP_PER_SCAN, read_cases
from training.validate import is_large

#: classifier thresholds swept per grid (None: nothing from that grid)
FIRST_THRESHOLDS: tuple[float | None, ...] = (None, 0.5, 0.6, 0.68, 0.76, 0.84, 0.9, 0.94)
SECOND_THRESHOLDS: tuple[float | None, ...] = (
    None,
    0.6,
    0.7,
    0.8,
    0.84,
    0.88,
    0.92,
    0.94,
    0.96,
    0.98,
)


@dataclass(frozen=True)
class UnionScore:
    """The joined candidates of one threshold pair, over a set."""

    first: float | None
    second: float | None
    tp: int
    fp: int
    tp_large: int
    n_truth: int
    n_truth_large: int
    n_scans: int

    @property
    def recall(self) -> float:
        return self.tp / self.n_truth if self.n_truth else 0.0

    @property
    def recall_large(self) -> float:
        return self.tp_large / self.n_truth_large if self.n_truth_large else 0.0

    @property
    def fp_per_scan(self) -> float:
        return self.fp / self.n_scans

    def row(self) -> str:
        """One markdown table row."""
        return (
            f"| {_name(self.first)} | {_name(self.second)} | {self.tp}, {self.fp} | "
            f"{self.recall:.3f} ({self.recall_large:.3f}) | {self.fp_per_scan:.2f} |"
        )


def _name(threshold: float | None) -> str:
    return "off" if threshold is None else f"{threshold:g}"


def kept_detections(case: dict[str, Any], configuration: str = "defaults") -> list[dict[str, Any]]:
    """The candidates of one ``cases.jsonl`` record that ``configuration``'s rules keep."""
    return [
        c["detection"] for c in case["candidates"] if c["rejected_by"].get(configuration) is None
    ]


def join(
    first: Sequence[dict[str, Any]],
    second: Sequence[dict[str, Any]],
    t1: float | None,
    t2: float | None,
    gap_mm: float = 1.0,
) -> list[dict[str, Any]]:
    """``first`` scoring >= ``t1`` and the ``second`` scoring >= ``t2`` that no joined
    first-grid candidate already holds (centres closer than the larger radius + ``gap_mm``)."""
    out = [d for d in first if t1 is not None and d["probability"] >= t1]
    taken = list(out)
    for d in second:
        if t2 is None or d["probability"] < t2:
            continue
        if not any(_same_object(d, x, gap_mm) for x in taken):
            out.append(d)
    return out


def _same_object(a: dict[str, Any], b: dict[str, Any], gap_mm: float) -> bool:
    distance = math.dist(a["center_lps_mm"], b["center_lps_mm"])
    return distance < max(a["diameter_mm"], b["diameter_mm"]) / 2.0 + gap_mm


def paired_cases(
    first: Sequence[dict[str, Any]], second: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The two runs' records case by case; the runs must hold the same cases."""
    a = {c["case_id"]: c for c in first}
    b = {c["case_id"]: c for c in second}
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise ValueError(
            f"the two runs hold different cases ({len(only)} on one side only, e.g. {only[0]}): "
            "measure the same set on both grids"
        )
    return [(a[k], b[k]) for k in sorted(a)]


class _Case(NamedTuple):
    """One case read once for every threshold pair: its truth and both grids' kept candidates."""

    case_id: str
    truth: tuple[TruthCMB, ...]
    large: list[bool]
    first: list[dict[str, Any]]
    second: list[dict[str, Any]]


def _prepare(pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> list[_Case]:
    out = []
    for a, b in pairs:
        truth = parse_cmbs(a["case_id"], a["truth"])
        large = [is_large(t) for t in truth]
        out.append(_Case(a["case_id"], truth, large, kept_detections(a), kept_detections(b)))
    return out


def score(
    pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]],
    t1: float | None,
    t2: float | None,
    gap_mm: float = 1.0,
) -> UnionScore:
    """TP and FP of the joined candidates at (``t1``, ``t2``) over every case."""
    return _score(_prepare(pairs), t1, t2, gap_mm)


def _score(cases: Sequence[_Case], t1: float | None, t2: float | None, gap_mm: float) -> UnionScore:
    tp = fp = tp_large = n_truth = n_large = 0
    for case in cases:
        joined = join(case.first, case.second, t1, t2, gap_mm)
        # numbered again: the two grids' candidate ids overlap
        preds = [
            PredCMB.from_json({**d, "id": i + 1}, f"{case.case_id} joined {i}")
            for i, d in enumerate(joined)
        ]
        match = match_case(case.truth, preds, case_id=case.case_id)
        tp += match.tp
        fp += match.fp
        tp_large += sum(1 for p in match.pairs if case.large[p.truth_index])
        n_truth += len(case.truth)
        n_large += sum(case.large)
    return UnionScore(t1, t2, tp, fp, tp_large, n_truth, n_large, len(cases))


def sweep(
    pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]],
    firsts: Iterable[float | None] = FIRST_THRESHOLDS,
    seconds: Iterable[float | None] = SECOND_THRESHOLDS,
    gap_mm: float = 1.0,
) -> list[UnionScore]:
    """Every threshold pair's score (both ``None`` left out: nothing to score); each case's
    records are read once for all pairs."""
    cases = _prepare(pairs)
    seconds = list(seconds)
    return [
        _score(cases, t1, t2, gap_mm)
        for t1 in firsts
        for t2 in seconds
        if t1 is not None or t2 is not None
    ]


def best(scores: Sequence[UnionScore], max_fp_per_scan: float = MAX_FP_PER_SCAN) -> UnionScore:
    """The export rule on pairs: the most CMBs found at <= ``max_fp_per_scan``, then the
    fewest false positives, then one grid rather than two (half the U-Net's time), then
    the higher thresholds; ValueError when no pair is inside the budget."""
    inside = [s for s in scores if s.fp_per_scan <= max_fp_per_scan]
    if not inside:
        raise ValueError(f"no threshold pair keeps <= {max_fp_per_scan} FP/scan")

    def key(s: UnionScore) -> tuple[int, int, int, float, float]:
        grids_off = (s.first is None) + (s.second is None)
        return (s.tp, -s.fp, grids_off, s.first or 0.0, s.second or 0.0)

    return max(inside, key=key)


TABLE_HEAD = (
    "| first grid at | second grid at | TP, FP | recall (≥ 3 mm) | FP/scan |\n|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--first", type=Path, required=True, help="filter_effect --out of one grid")
    p.add_argument("--second", type=Path, required=True, help="the other grid's, same cases")
    p.add_argument("--gap-mm", type=float, default=1.0, help="same object: radius + this")
    p.add_argument(
        "--at",
        nargs=2,
        metavar=("T1", "T2"),
        help="score this pair only ('off': nothing from that grid)",
    )
    a = p.parse_args(argv)

    def threshold(text: str) -> float | None:
        return None if text == "off" else float(text)

    try:
        pairs = paired_cases(
            read_cases(a.first / "cases.jsonl"), read_cases(a.second / "cases.jsonl")
        )
    except ValueError as e:
        p.error(str(e))
    if a.at:
        print(TABLE_HEAD)
        print(score(pairs, threshold(a.at[0]), threshold(a.at[1]), a.gap_mm).row())
        return 0
    scores = sweep(pairs, gap_mm=a.gap_mm)
    print(TABLE_HEAD)
    for s in scores:
        print(s.row())
    try:
        chosen = best(scores)
    except ValueError as e:
        print(e)
        return 1
    print(
        f"\nchosen (most CMBs at <= {MAX_FP_PER_SCAN} FP/scan, then fewest FPs, then one "
        f"grid): {asdict(chosen)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
