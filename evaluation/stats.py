"""Small statistics helpers shared by the metric modules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def ratio(num: float, den: float) -> float | None:
    """num / den, or None when the denominator is 0 (an undefined metric is never 0)."""
    return float(num) / float(den) if den > 0 else None


def mean_sd(values: Sequence[float | None], n_total: int | None = None) -> dict[str, Any]:
    """Mean, sample SD (ddof=1), median of the defined values; how many were used / left out."""
    vals = np.array([v for v in values if v is not None], dtype=np.float64)
    n_total = len(values) if n_total is None else n_total
    return {
        "mean": float(vals.mean()) if vals.size else None,
        "sd": float(vals.std(ddof=1)) if vals.size >= 2 else None,
        "median": float(np.median(vals)) if vals.size else None,
        "n": int(vals.size),
        "n_excluded": int(n_total - vals.size),
    }
