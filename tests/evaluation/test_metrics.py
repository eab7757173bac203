"""Every metric of a four-scan example, computed by hand in the comments.

Rule center:5.  Scan A: CMBs at x = 0, 20, 40 mm; predictions
  p1 x=4.9 (p .90)            -> just inside 5 mm of CMB 0: TP
  p2 (20, 1, 0) (p .80)       -> on CMB 20: TP (closer of the two)
  p2b (20, -2, 0) (p .85)     -> second prediction on CMB 20: FP
  p3 x=45.1 (p .70)           -> 5.1 mm from CMB 40: just outside: FP; CMB 40: FN
Scan B: no CMB, one prediction (p .60): a scan-level FP.
Scan C: one CMB, no prediction: FN.
Scan D: nothing at all.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.cases import PredCMB, TruthCMB
from evaluation.classification import auc, classification_metrics, icc_2_1, weighted_kappa
from evaluation.froc import froc
from evaluation.matching import CaseMatch, MatchRule, match_case
from evaluation.metrics import Counts, bootstrap_ci, detection_metrics, per_scan_metrics

RULE = MatchRule.parse("center:5")
TRUTH = {
    "A": [
        TruthCMB((0, 0, 0), mars="lobar"),
        TruthCMB((20, 0, 0), mars="deep"),
        TruthCMB((40, 0, 0), mars="lobar"),
    ],
    "B": [],
    "C": [TruthCMB((0, 0, 0), mars="infratentorial")],
    "D": [],
}
PREDS = {
    "A": [
        PredCMB(1, (4.9, 0, 0), 0.9, mars="lobar"),
        PredCMB(2, (20, 1, 0), 0.8, mars="deep"),
        PredCMB(3, (20, -2, 0), 0.85, mars="deep"),
        PredCMB(4, (45.1, 0, 0), 0.7, mars="lobar"),
    ],
    "B": [PredCMB(1, (0, 0, 0), 0.6, mars="deep")],
    "C": [],
    "D": [],
}


def matches(threshold: float | None = None) -> list[CaseMatch]:
    return [
        match_case(
            TRUTH[c],
            [p for p in PREDS[c] if threshold is None or p.probability >= threshold],
            RULE,
            case_id=c,
        )
        for c in "ABCD"
    ]


def test_counts_per_scan() -> None:
    got = {m.case_id: (m.tp, m.fp, m.fn) for m in matches()}
    assert got == {"A": (2, 2, 1), "B": (0, 1, 0), "C": (0, 0, 1), "D": (0, 0, 0)}


def test_global_detection_metrics() -> None:
    d = detection_metrics(matches(), n_bootstrap=0)
    assert d["counts"] == {"n_scans": 4, "n_truth": 4, "n_pred": 5, "tp": 2, "fp": 3, "fn": 2}
    assert d["precision"]["value"] == pytest.approx(2 / 5)
    assert d["recall"]["value"] == pytest.approx(2 / 4)
    assert d["f1"]["value"] == pytest.approx(4 / 9)  # 2TP / (2TP + FP + FN)
    assert d["fp_per_scan"]["value"] == pytest.approx(3 / 4)
    assert d["recall"]["ci95"] is None  # no bootstrap asked


def test_per_scan_means_and_exclusions() -> None:
    ps = per_scan_metrics(matches())
    # recall: A 2/3, C 0; B and D have no CMB -> excluded
    assert ps["recall"]["mean"] == pytest.approx(1 / 3)
    assert ps["recall"]["sd"] == pytest.approx((2 / 3) / math.sqrt(2))
    assert (ps["recall"]["n"], ps["recall"]["n_excluded"]) == (2, 2)
    # precision: A 2/4, B 0; C and D have no prediction -> excluded
    assert ps["precision"]["mean"] == pytest.approx(0.25)
    assert (ps["precision"]["n"], ps["precision"]["n_excluded"]) == (2, 2)
    # F1: A 2*2/(3+4) = 4/7, B 0, C 0; D (nothing) excluded
    assert ps["f1"]["mean"] == pytest.approx((4 / 7) / 3)
    assert (ps["f1"]["n"], ps["f1"]["n_excluded"]) == (3, 1)
    # FP per scan: 2, 1, 0, 0 -> mean 0.75, sample SD sqrt(2.75 / 3)
    assert ps["fp_per_scan"]["mean"] == pytest.approx(0.75)
    assert ps["fp_per_scan"]["sd"] == pytest.approx(math.sqrt(2.75 / 3))
    assert (ps["n_scans_without_cmb"], ps["n_scans_without_prediction"]) == (2, 2)


def test_only_scans_without_cmbs_or_without_predictions() -> None:
    no_cmb = [match_case([], [PredCMB(1, (0, 0, 0), 0.5)], RULE)]
    c = Counts.of(no_cmb)
    assert (c.recall, c.precision, c.f1, c.fp_per_scan) == (None, 0.0, 0.0, 1.0)
    no_pred = [match_case([TruthCMB((0, 0, 0))], [], RULE)]
    c = Counts.of(no_pred)
    assert (c.recall, c.precision, c.f1, c.fp_per_scan) == (0.0, None, 0.0, 0.0)
    nothing = [match_case([], [], RULE)]
    ps = per_scan_metrics(nothing)
    assert ps["recall"]["mean"] is None
    assert ps["f1"]["n_excluded"] == 1


def test_bootstrap_is_deterministic_with_seed() -> None:
    ms = matches()
    a = bootstrap_ci(ms, 500, seed=7)
    b = bootstrap_ci(ms, 500, seed=7)
    assert a == b
    lo, hi = a["recall"]  # type: ignore[misc]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    d = detection_metrics(ms, n_bootstrap=500, seed=7)
    assert d["recall"]["ci95"] == list(a["recall"])  # type: ignore[arg-type]
    # on many scans the seed matters (so it really is the seed that fixes the interval)
    rng = np.random.default_rng(0)
    many = [
        match_case(
            [TruthCMB((float(x), 0, 0)) for x in range(0, 40 * int(rng.integers(0, 4)), 40)],
            [
                PredCMB(n + 1, (float(x), 1, 0), 0.9)
                for n, x in enumerate(range(0, 120, 40))
                if rng.random() < 0.6
            ],
            RULE,
        )
        for _ in range(30)
    ]
    assert bootstrap_ci(many, 200, seed=1) == bootstrap_ci(many, 200, seed=1)
    assert bootstrap_ci(many, 200, seed=1) != bootstrap_ci(many, 200, seed=2)


def test_classification() -> None:
    cls = classification_metrics(matches())
    # positive scans A, C; predicted positive A, B -> TP A, FN C, FP B, TN D
    assert (cls["tp"], cls["fn"], cls["fp"], cls["tn"]) == (1, 1, 1, 1)
    assert cls["sensitivity"] == 0.5
    assert cls["specificity"] == 0.5
    # scores A .9, C 0 vs B .6, D 0: pairs (A,B)=1 (A,D)=1 (C,B)=0 (C,D)=1/2 -> 2.5/4
    assert cls["auc"] == pytest.approx(0.625)
    assert auc([0.2, 0.3], [True, True]) is None


def test_icc_matches_shrout_fleiss_table() -> None:
    # Shrout & Fleiss (1979), Table 2: ICC(2,1) = 0.29
    ratings = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
    assert icc_2_1(ratings) == pytest.approx(0.29, abs=0.005)
    assert icc_2_1([[1, 1], [1, 1]]) is None


def test_weighted_kappa() -> None:
    assert weighted_kappa([0, 1, 2], [0, 1, 2], 3) == pytest.approx(1.0)
    # two categories: po = .75, pe = .5*.25 + .5*.75 = .5 -> kappa .5
    assert weighted_kappa([0, 0, 1, 1], [0, 1, 1, 1], 2) == pytest.approx(0.5)


def test_froc_by_hand() -> None:
    probs = [p.probability for c in "ABCD" for p in PREDS[c]]
    curve = froc(matches, probs, operating_threshold=0.8)
    got = [(p.threshold, p.sensitivity, p.fp_per_scan) for p in curve.points]
    assert got == [
        (None, 0.0, 0.0),
        (0.9, 0.25, 0.0),  # p1
        (0.85, 0.5, 0.0),  # + p2b matches CMB 20
        (0.8, 0.5, 0.25),  # + p2: one of p2/p2b is a duplicate
        (0.7, 0.5, 0.5),  # + p3 (outside)
        (0.6, 0.5, 0.75),  # + scan B
    ]
    assert curve.operating_point is not None
    assert (curve.operating_point.sensitivity, curve.operating_point.fp_per_scan) == (0.5, 0.25)
    shipped = froc(matches, probs).operating_point
    assert (shipped.threshold, shipped.sensitivity, shipped.fp_per_scan) == (None, 0.5, 0.75)
    assert curve.sensitivity_at(0.125) == 0.5
    assert curve.cpm() == pytest.approx(0.5)
    assert np.isclose(curve.to_json()["sensitivity_at_fp_per_scan"]["8"], 0.5)
