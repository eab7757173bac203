"""Detection metrics, both ways the literature reports them.

*Global* (pooled over all CMBs of all scans): counts are summed over scans, then

    precision = TP / (TP + FP)      recall = TP / (TP + FN)
    F1 = 2 TP / (2 TP + FP + FN)    FP per scan = FP / n_scans

with a 95 % percentile bootstrap confidence interval over *scans* (scans are the
independent units; CMBs of one scan are not): ``n_bootstrap`` resamples of the
scans with replacement, seeded, so the interval is reproducible.

*Per scan* (each scan's metric, then mean ± sample SD over the scans where it is
defined):

* recall: scans with >= 1 true CMB (a scan without CMBs has no recall);
* precision: scans with >= 1 prediction (a scan with no prediction has no
  precision; its misses are counted by recall);
* F1: scans with >= 1 true CMB or >= 1 prediction (both zero is 0/0);
* FP per scan: every scan.

Each per-scan entry reports how many scans it used (``n``) and left out
(``n_excluded``).  A metric that is undefined is ``None`` (JSON ``null``), never 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from evaluation.classification import classification_metrics, mars_agreement
from evaluation.froc import FrocCurve, froc
from evaluation.matching import CaseMatch
from evaluation.segmentation import segmentation_metrics
from evaluation.stats import mean_sd, ratio

__all__ = [
    "Counts",
    "FrocCurve",
    "bootstrap_ci",
    "classification_metrics",
    "detection_metrics",
    "estimate",
    "froc",
    "mars_agreement",
    "mean_sd",
    "per_scan_metrics",
    "segmentation_metrics",
]

DETECTION_METRICS = ("precision", "recall", "f1", "fp_per_scan")


@dataclass(frozen=True)
class Counts:
    """Pooled detection counts over a set of scans."""

    n_scans: int
    n_truth: int
    n_pred: int
    tp: int
    fp: int
    fn: int

    @classmethod
    def of(cls, matches: Sequence[CaseMatch]) -> Counts:
        return cls(
            n_scans=len(matches),
            n_truth=sum(m.n_truth for m in matches),
            n_pred=sum(m.n_pred for m in matches),
            tp=sum(m.tp for m in matches),
            fp=sum(m.fp for m in matches),
            fn=sum(m.fn for m in matches),
        )

    @property
    def precision(self) -> float | None:
        return ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float | None:
        return ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def fp_per_scan(self) -> float | None:
        return ratio(self.fp, self.n_scans)

    def metric(self, name: str) -> float | None:
        value: float | None = getattr(self, name)
        return value

    def to_json(self) -> dict[str, int]:
        return {
            "n_scans": self.n_scans,
            "n_truth": self.n_truth,
            "n_pred": self.n_pred,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
        }


def estimate(value: float | None, ci: tuple[float, float] | None = None) -> dict[str, Any]:
    """The JSON shape of one global metric: ``{"value": x, "ci95": [lo, hi] | null}``."""
    return {"value": value, "ci95": list(ci) if ci is not None else None}


def _vectorised(name: str, tp: Any, fp: Any, fn: Any, n: int) -> npt.NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "precision":
            out = tp / (tp + fp)
        elif name == "recall":
            out = tp / (tp + fn)
        elif name == "f1":
            out = 2 * tp / (2 * tp + fp + fn)
        elif name == "fp_per_scan":
            out = fp / n
        else:
            raise ValueError(f"unknown detection metric {name!r}")
    return np.asarray(out, dtype=np.float64)


def bootstrap_ci(
    matches: Sequence[CaseMatch],
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float] | None]:
    """Percentile bootstrap CIs over scans of the global detection metrics.

    Resamples whose metric is undefined (e.g. no prediction at all for precision)
    are left out of that metric's percentiles; ``None`` if all are.
    """
    n = len(matches)
    if n == 0 or n_bootstrap <= 0:
        return dict.fromkeys(DETECTION_METRICS)
    per = np.array([(m.tp, m.fp, m.fn) for m in matches], dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_bootstrap, n))
    sums = per[idx].sum(axis=1)  # (B, 3)
    tp, fp, fn = sums[:, 0], sums[:, 1], sums[:, 2]
    alpha = (1.0 - level) / 2.0
    out: dict[str, tuple[float, float] | None] = {}
    for name in DETECTION_METRICS:
        values = _vectorised(name, tp, fp, fn, n)
        values = values[np.isfinite(values)]
        if values.size == 0:
            out[name] = None
        else:
            lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
            out[name] = (float(lo), float(hi))
    return out


def detection_metrics(
    matches: Sequence[CaseMatch], n_bootstrap: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Global detection metrics with bootstrap 95 % CIs (see the module docstring)."""
    counts = Counts.of(matches)
    cis = bootstrap_ci(matches, n_bootstrap, seed)
    out: dict[str, Any] = {"counts": counts.to_json()}
    for name in DETECTION_METRICS:
        out[name] = estimate(counts.metric(name), cis[name])
    return out


def scan_values(m: CaseMatch) -> dict[str, float | None]:
    """One scan's detection metrics (``None`` where undefined, see the module docstring)."""
    return {
        "precision": ratio(m.tp, m.n_pred),
        "recall": ratio(m.tp, m.n_truth),
        "f1": ratio(2 * m.tp, m.n_truth + m.n_pred),
        "fp_per_scan": float(m.fp),
    }


def per_scan_metrics(matches: Sequence[CaseMatch]) -> dict[str, Any]:
    """Per-scan detection metrics averaged over scans: mean ± SD, n used, n excluded."""
    rows = [scan_values(m) for m in matches]
    out: dict[str, Any] = {name: mean_sd([r[name] for r in rows]) for name in DETECTION_METRICS}
    out["n_scans"] = len(matches)
    out["n_scans_without_cmb"] = sum(1 for m in matches if m.n_truth == 0)
    out["n_scans_without_prediction"] = sum(1 for m in matches if m.n_pred == 0)
    return out
