"""FROC: lesion sensitivity against false positives per scan, over probability thresholds.

For each threshold t (the distinct probabilities of the candidates, thinned to
at most ``max_points`` quantiles), only predictions with probability >= t are
kept and every case is matched again (one-to-one matching is not monotone
under a simple re-labelling of a fixed matching, so we do not shortcut it).
The curve starts at (0 FP/scan, sensitivity 0) for "no prediction".

The summary ``cpm`` is the mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 FP
per scan (the Competition Performance Metric of ANODE09 / LUNA16): at each rate
r we take the highest sensitivity among points with FP/scan <= r (a step
function, no interpolation; the curve is held flat past its last point).

The candidates come from detections.json, which holds only what passed the
shipped threshold, so the curve cannot reach below it.  The operating point is
the matching at the evaluated threshold: ``--threshold`` when given, else the
shipped one (every kept detection; ``threshold`` null, ``source`` "shipped").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluation.matching import CaseMatch

CPM_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class FrocPoint:
    threshold: float | None  # None: no prediction at all
    sensitivity: float | None
    fp_per_scan: float
    tp: int
    fp: int

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "sensitivity": self.sensitivity,
            "fp_per_scan": self.fp_per_scan,
            "tp": self.tp,
            "fp": self.fp,
        }


def _point(threshold: float | None, matches: Sequence[CaseMatch]) -> FrocPoint:
    n_truth = sum(m.n_truth for m in matches)
    tp = sum(m.tp for m in matches)
    fp = sum(m.fp for m in matches)
    return FrocPoint(
        threshold=threshold,
        sensitivity=tp / n_truth if n_truth else None,
        fp_per_scan=fp / len(matches) if matches else 0.0,
        tp=tp,
        fp=fp,
    )


@dataclass(frozen=True)
class FrocCurve:
    points: tuple[FrocPoint, ...]  # by decreasing threshold (increasing FP/scan)
    operating_point: FrocPoint  # threshold None: the shipped threshold (all candidates)
    n_truth: int
    n_scans: int

    def sensitivity_at(self, fp_per_scan: float) -> float | None:
        """Highest sensitivity among points with FP/scan <= the rate (step function)."""
        values = [
            p.sensitivity
            for p in self.points
            if p.fp_per_scan <= fp_per_scan and p.sensitivity is not None
        ]
        return max(values) if values else None

    def cpm(self, rates: Sequence[float] = CPM_RATES) -> float | None:
        values = [self.sensitivity_at(r) for r in rates]
        if any(v is None for v in values):
            return None
        return float(np.mean([v for v in values if v is not None]))

    def to_json(self) -> dict[str, Any]:
        return {
            "n_truth": self.n_truth,
            "n_scans": self.n_scans,
            "points": [p.to_json() for p in self.points],
            "operating_point": {
                **self.operating_point.to_json(),
                "source": "shipped" if self.operating_point.threshold is None else "--threshold",
            },
            "sensitivity_at_fp_per_scan": {f"{r:g}": self.sensitivity_at(r) for r in CPM_RATES},
            "cpm": self.cpm(),
        }


def froc_thresholds(probabilities: Sequence[float], max_points: int = 100) -> list[float]:
    """Distinct probabilities, descending; thinned to ``max_points`` quantiles if needed."""
    values = np.unique(np.asarray(probabilities, dtype=np.float64))
    if values.size > max_points:
        values = np.unique(np.quantile(values, np.linspace(0.0, 1.0, max_points)))
    return [float(v) for v in values[::-1]]


def froc(
    matcher: Callable[[float], Sequence[CaseMatch]],
    probabilities: Sequence[float],
    operating_threshold: float | None = None,
    max_points: int = 100,
    progress: Callable[[int], None] | None = None,
) -> FrocCurve:
    """Build the FROC curve.

    ``matcher(t)`` returns the case matches when only predictions with
    probability >= t count; ``probabilities`` are those of every candidate.
    """
    no_pred = matcher(float("inf"))
    n_truth = sum(m.n_truth for m in no_pred)
    points = [_point(None, no_pred)]
    for t in froc_thresholds(probabilities, max_points):
        points.append(_point(t, matcher(t)))
        if progress is not None:
            progress(1)
    if operating_threshold is None:  # as shipped: every candidate counts
        op = _point(None, matcher(float("-inf")))
    else:
        op = _point(operating_threshold, matcher(operating_threshold))
    return FrocCurve(tuple(points), op, n_truth, len(no_pred))
