"""Scan-level classification ("does this scan have any CMB?") and MARS count agreement.

Classification: a scan is positive in truth when it has >= 1 true CMB, and
predicted positive when it has >= 1 prediction at the evaluated threshold.
Sensitivity = TP / (TP + FN) over positive scans, specificity = TN / (TN + FP)
over negative scans.  The AUC uses each scan's maximum prediction probability
(0 for a scan with no candidate) as the score; it is the Mann-Whitney
probability that a positive scan outscores a negative one (ties count 1/2).

MARS agreement: per scan, the number of CMBs in each MARS category
(lobar / deep / infratentorial) in truth and in the predictions.  For each
category we report the intraclass correlation ICC(2,1) (Shrout & Fleiss 1979:
two-way random effects, absolute agreement, single rater) of the counts, and a
quadratic-weighted Cohen's kappa of the counts binned as 0, 1, 2-4, >= 5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from evaluation.matching import CaseMatch

MARS_CATEGORIES = ("lobar", "deep", "infratentorial")
COUNT_BINS = (0, 1, 2, 5)  # lower edges: 0, 1, 2-4, >=5
COUNT_BIN_NAMES = ("0", "1", "2-4", ">=5")


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U / (n_pos n_neg)); None with one class only."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(s)
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def classification_metrics(
    matches: Sequence[CaseMatch], scores: Sequence[float] | None = None
) -> dict[str, Any]:
    """Scan-level sensitivity, specificity and AUC (see the module docstring).

    ``scores`` are the per-scan scores for the AUC (default: the maximum
    probability of each scan's evaluated predictions).
    """
    truth = [m.n_truth > 0 for m in matches]
    pred = [m.n_pred > 0 for m in matches]
    if scores is None:
        scores = [m.max_probability() for m in matches]
    if len(scores) != len(matches):
        raise ValueError("classification_metrics: one score per scan is needed")
    tp = sum(1 for t, p in zip(truth, pred, strict=True) if t and p)
    fn = sum(1 for t, p in zip(truth, pred, strict=True) if t and not p)
    tn = sum(1 for t, p in zip(truth, pred, strict=True) if not t and not p)
    fp = sum(1 for t, p in zip(truth, pred, strict=True) if not t and p)
    return {
        "n_positive": tp + fn,
        "n_negative": tn + fp,
        "tp": tp,
        "fn": fn,
        "tn": tn,
        "fp": fp,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "auc": auc(scores, truth),
    }


def icc_2_1(ratings: npt.ArrayLike) -> float | None:
    """ICC(2,1) of an (n subjects x k raters) table; None when undefined."""
    x = np.asarray(ratings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"icc_2_1 needs an (n subjects x k raters) table, got shape {x.shape}")
    n, k = x.shape
    if n < 2 or k < 2:
        return None
    grand = x.mean()
    ss_rows = k * float(((x.mean(axis=1) - grand) ** 2).sum())
    ss_cols = n * float(((x.mean(axis=0) - grand) ** 2).sum())
    ss_total = float(((x - grand) ** 2).sum())
    ss_err = ss_total - ss_rows - ss_cols
    msr = ss_rows / (n - 1)
    msc = ss_cols / (k - 1)
    mse = ss_err / ((n - 1) * (k - 1))
    den = msr + (k - 1) * mse + k * (msc - mse) / n
    if den <= 1e-12:
        return None
    return float((msr - mse) / den)


def _bin_counts(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    return np.asarray(np.searchsorted(COUNT_BINS, values, side="right") - 1, dtype=np.int64)


def weighted_kappa(a: Sequence[int], b: Sequence[int], n_categories: int) -> float | None:
    """Quadratic-weighted Cohen's kappa of two ratings in 0..n_categories-1; None if undefined."""
    ra = np.asarray(a, dtype=np.int64)
    rb = np.asarray(b, dtype=np.int64)
    if ra.size == 0:
        return None
    obs = np.zeros((n_categories, n_categories), dtype=np.float64)
    np.add.at(obs, (ra, rb), 1.0)
    obs /= obs.sum()
    exp = np.outer(obs.sum(axis=1), obs.sum(axis=0))
    i, j = np.indices((n_categories, n_categories))
    w = (i - j) ** 2 / float((n_categories - 1) ** 2)
    den = float((w * exp).sum())
    if den <= 1e-12:
        return None
    return 1.0 - float((w * obs).sum()) / den


def mars_counts(m: CaseMatch) -> tuple[dict[str, int], dict[str, int]]:
    """Per-category counts of one scan: (truth, predictions)."""
    t = {c: sum(1 for x in m.truth if x.mars == c) for c in MARS_CATEGORIES}
    p = {c: sum(1 for x in m.preds if x.mars == c) for c in MARS_CATEGORIES}
    return t, p


def mars_agreement(matches: Sequence[CaseMatch]) -> dict[str, Any] | None:
    """ICC(2,1) and weighted kappa per MARS category; None if truth carries no MARS labels."""
    used = [m for m in matches if not m.truth or all(x.mars is not None for x in m.truth)]
    if not any(x.mars is not None for m in matches for x in m.truth):
        return None
    out: dict[str, Any] = {"n_scans": len(used), "n_excluded": len(matches) - len(used)}
    for cat in MARS_CATEGORIES:
        pairs = [mars_counts(m) for m in used]
        t = np.array([tc[cat] for tc, _ in pairs], dtype=np.int64)
        p = np.array([pc[cat] for _, pc in pairs], dtype=np.int64)
        out[cat] = {
            "truth_total": int(t.sum()),
            "pred_total": int(p.sum()),
            "icc_2_1": icc_2_1(np.stack([t, p], axis=1)),
            "weighted_kappa": weighted_kappa(
                _bin_counts(t).tolist(), _bin_counts(p).tolist(), len(COUNT_BINS)
            ),
            "mean_abs_count_difference": float(np.abs(t - p).mean()) if t.size else None,
        }
    return out
