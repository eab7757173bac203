"""Would a score stacked on the classifier's keep more CMBs? Cross-validated on a selection set.

The candidate classifier sees a 24 mm cube of the resampled image.  It does
not see how sure the U-Net was, the U-Net component's size and shape, the
series' own voxel size (a 1.5 mm microbleed on 5 mm slices reaches it as the
same 1 mm cube as one on 1 mm slices), nor where the candidate lies (the
location filter's region numbers and the dark structure through it).  This
tool asks whether a model over those numbers and the classifier's score
ranks the candidates better than the score alone, before any of it is built
into the product.

Input: the ``cases.jsonl`` of a ``training.parcellation.filter_effect`` run on
a *selection* set (each recorded candidate carries ``features``,
:func:`training.parcellation.filter_effect.score_features`, and its
``region`` and ``dark_structure`` numbers).  Each candidate is labelled by
matching each case's recorded candidates to its true CMBs with the evaluation
package's default rule (a second candidate on one CMB is a false positive,
as the product counts it).  The cases are split into ``folds`` by case; each
fold's candidates are scored by a model fitted on the other folds
(scikit-learn), and the pooled out-of-fold scores go through the product
path's tables (:func:`~training.parcellation.filter_effect.summarise`, the
default location rules as recorded) to the operating point: the highest
recall at <= 0.5 false positives per scan, as for the classifier alone.

    python -m training.classifier.stacking --cases runs/fe/select90/cases.jsonl

Candidates below the run's ``--min-score`` were not recorded, so none of
them can be promoted: run ``filter_effect`` with a low ``--min-score`` (0.1
here).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.errors import InputError
from training.parcellation.filter_effect import (
    MAX_FP_PER_SCAN,
    THRESHOLDS,
    candidate_rows,
    operating_point,
    read_cases,
    summarise,
)

#: ``features`` of a candidate record (filter_effect.score_features), in this order.
SCORE_FEATURES = (
    "classifier_logit",
    "unet_logit",
    "unet_mean_logit",
    "log_diameter_mm",
    "elongation",
    "slice_mm",
    "inplane_mm",
)
#: The location filter's region numbers of a candidate record.
REGION_FEATURES = (
    "lateral_ventricle_fraction",
    "parenchyma_fraction",
    "fluid_fraction",
    "distance_cortex_mm",
    "distance_ventricle_mm",
    "distance_deep_nuclei_mm",
)
#: The dark structure through a candidate (model.location.vessel), read as they are; its
#: volume (as log1p) and whether it touches the border follow them.
STRUCTURE_FEATURES = ("elongation", "length_mm", "width_mm", "contrast")
#: Thresholds of the choice: the tables' grid and every hundredth from 0.05 (a stacked
#: probability is calibrated to the share of true candidates, far below the classifier's).
CHOICE_THRESHOLDS = tuple(sorted({*THRESHOLDS, *(round(0.05 + 0.01 * n, 2) for n in range(95))}))
_FAR_MM = 50.0  # distances beyond this (or none: no such structure) read as this


def _finite(value: Any, cap: float) -> float:
    if value is None or not math.isfinite(float(value)):
        return cap
    return min(float(value), cap)


def candidate_vector(candidate: dict[str, Any], with_location: bool) -> list[float]:
    """One recorded candidate as numbers: its score features, then (``with_location``) where it
    lies and the dark structure through it."""
    features = candidate.get("features")
    if not features:
        raise InputError(
            "a candidate without features: measure with this version of filter_effect "
            "(it records them) and the image"
        )
    out = [float(features[k]) for k in SCORE_FEATURES]
    if with_location:
        region = candidate.get("region") or {}
        structure = candidate.get("dark_structure") or {}
        out += [_finite(region.get(k), _FAR_MM) for k in REGION_FEATURES]
        out += [_finite(structure.get(k), 1e6) for k in STRUCTURE_FEATURES]
        out += [math.log1p(_finite(structure.get("volume_mm3"), 1e6))]
        out += [float(bool(structure.get("touches_border")))]
    return out


def labels(cases: Sequence[dict[str, Any]]) -> npt.NDArray[np.int64]:
    """1 for each recorded candidate matched to a true CMB, else 0 (cases in order): the
    outcome column of :func:`~training.parcellation.filter_effect.candidate_rows`."""
    rows = candidate_rows(cases, threshold=0.0)
    return np.asarray([int(r["outcome"] == "TP") for r in rows], dtype=np.int64)


def _logistic() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=0.3, max_iter=2000)


def _boosting() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_depth=3, learning_rate=0.05, max_iter=200, l2_regularization=1.0, random_state=0
    )


#: name: (uses the location numbers, a new unfitted scikit-learn classifier)
MODELS: dict[str, tuple[bool, Callable[[], Any]]] = {
    "logistic, scores, size, voxel size": (False, _logistic),
    "logistic, and location": (True, _logistic),
    "gradient boosting, and location": (True, _boosting),
}


def out_of_fold(
    cases: Sequence[dict[str, Any]], y: npt.NDArray[np.int64], name: str, folds: int
) -> npt.NDArray[np.float64]:
    """Each candidate's probability from model ``name`` fitted on the other folds' cases."""
    with_location, make = MODELS[name]
    x = np.array(
        [candidate_vector(c, with_location) for case in cases for c in case["candidates"]],
        dtype=np.float64,
    )
    fold = np.array([n % folds for n, case in enumerate(cases) for _ in case["candidates"]])
    p = np.zeros(len(y))
    for k in range(folds):
        train = fold != k
        if y[train].sum() == 0 or y[train].sum() == train.sum():
            raise InputError(f"fold {k}: the other folds need true and false candidates")
        mean, scale = x[train].mean(axis=0), x[train].std(axis=0)
        scale[scale < 1e-9] = 1.0
        model = make().fit((x[train] - mean) / scale, y[train])
        p[~train] = model.predict_proba((x[~train] - mean) / scale)[:, 1]
    return p


def with_scores(
    cases: Sequence[dict[str, Any]], scores: npt.NDArray[np.float64]
) -> list[dict[str, Any]]:
    """Copies of ``cases`` whose candidates' probability is ``scores`` (in order)."""
    out = copy.deepcopy(list(cases))
    values = iter(scores)
    for case in out:
        for cand in case["candidates"]:
            cand["detection"]["probability"] = round(float(next(values)), 4)
    return out


def at_operating_point(
    cases: Sequence[dict[str, Any]], max_fp_per_scan: float = MAX_FP_PER_SCAN
) -> dict[str, Any]:
    """The product path's row (default rules) at its operating point, with the threshold."""
    summary = summarise(cases, CHOICE_THRESHOLDS)
    threshold = operating_point(summary, max_fp_per_scan=max_fp_per_scan)
    return {"threshold": threshold, **summary["by_configuration"]["defaults"][f"{threshold:g}"]}


def compare(cases: Sequence[dict[str, Any]], folds: int = 5) -> dict[str, dict[str, Any]]:
    """The classifier alone and each of :data:`MODELS` (out of fold) at their operating points."""
    if len(cases) < folds:
        raise InputError(f"{len(cases)} cases cannot make {folds} folds")
    ordered = sorted(cases, key=lambda c: c["case_id"])
    y = labels(ordered)
    rows = {"classifier alone": at_operating_point(ordered)}
    for name in MODELS:
        rows[name] = at_operating_point(with_scores(ordered, out_of_fold(ordered, y, name, folds)))
    return rows


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| score | threshold | TP, FP | recall (≥ 3 mm) | FP/scan |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['threshold']:g} | {r['tp']}, {r['fp']} | "
            f"{r['recall']:.3f} ({r['recall_large']:.3f}) | {r['fp_per_scan']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cases", type=Path, required=True, help="filter_effect cases.jsonl")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds, by case")
    p.add_argument("--out", type=Path, help="also write the rows as JSON")
    a = p.parse_args(argv)
    if a.folds < 2:
        p.error("--folds must be at least 2")
    try:
        rows = compare(read_cases(a.cases), a.folds)
    except InputError as e:
        p.error(str(e))
    print(table(rows))
    if a.out:
        a.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
