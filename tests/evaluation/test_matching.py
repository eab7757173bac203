"""Matching rules, hand-checked: radius edges, duplicates, sizes, overlap, order invariance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.cases import LabelMap, PredCMB, TruthCMB
from evaluation.errors import EvaluationInputError
from evaluation.matching import MatchKind, MatchRule, match_case


def tcmb(x: float, y: float = 0.0, z: float = 0.0, **kw: object) -> TruthCMB:
    return TruthCMB((x, y, z), **kw)  # type: ignore[arg-type]


def pcmb(i: int, x: float, y: float = 0.0, z: float = 0.0, p: float = 0.9, **kw: object) -> PredCMB:
    return PredCMB(i, (x, y, z), p, **kw)  # type: ignore[arg-type]


def test_parse_rules() -> None:
    assert MatchRule.parse("center:5") == MatchRule(MatchKind.CENTER, radius_mm=5.0)
    assert MatchRule.parse("center:2.5").radius_mm == 2.5
    assert MatchRule.parse("size-aware").kind is MatchKind.SIZE_AWARE
    assert MatchRule.parse("size_aware:1.5").size_factor == 1.5
    assert MatchRule.parse("overlap:0.1").min_iou == 0.1
    assert MatchRule.parse("VALDO").kind is MatchKind.VALDO
    with pytest.raises(ValueError, match="unknown match rule"):
        MatchRule.parse("nearest")
    with pytest.raises(ValueError, match="not a number"):
        MatchRule.parse("center:five")
    with pytest.raises(ValueError, match="positive"):
        MatchRule.parse("center:-1")


def test_just_inside_and_just_outside_the_radius() -> None:
    truth = [tcmb(0.0), tcmb(100.0)]
    preds = [pcmb(1, 4.999), pcmb(2, 105.001)]
    m = match_case(truth, preds, MatchRule.parse("center:5"))
    assert (m.tp, m.fp, m.fn) == (1, 1, 1)
    assert m.pairs[0].truth_index == 0
    assert m.pairs[0].pred_index == 0
    assert m.pairs[0].distance_mm == pytest.approx(4.999)
    # exactly on the radius counts as a match (<=)
    assert match_case([tcmb(0.0)], [pcmb(1, 0.0, 3.0, 4.0)]).tp == 1


def test_two_predictions_on_one_cmb_one_is_a_false_positive() -> None:
    m = match_case([tcmb(0.0)], [pcmb(1, 1.0, p=0.6), pcmb(2, 2.0, p=0.99)])
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)
    assert m.preds[m.pairs[0].pred_index].id == 1  # the closer one


def test_hungarian_maximises_matches_over_greedy() -> None:
    # Greedy nearest would give pred 1 to truth 2 (distance 1) and leave truth 1 unmatched.
    truth = [tcmb(0.0), tcmb(5.0)]
    preds = [pcmb(1, 4.0), pcmb(2, 9.5)]
    m = match_case(truth, preds, MatchRule.parse("center:5"))
    assert m.tp == 2


def test_empty_sides() -> None:
    assert (lambda m: (m.tp, m.fp, m.fn))(match_case([], [pcmb(1, 0.0)])) == (0, 1, 0)
    assert (lambda m: (m.tp, m.fp, m.fn))(match_case([tcmb(0.0)], [])) == (0, 0, 1)
    assert match_case([], []).tp == 0


def test_size_aware_rule() -> None:
    rule = MatchRule.parse("size-aware")  # distance <= max(1.5, (d_true + d_pred) / 2)
    truth = [tcmb(0.0, diameter_mm=8.0)]
    assert match_case(truth, [pcmb(1, 6.9, diameter_mm=6.0)], rule).tp == 1  # limit 7
    assert match_case(truth, [pcmb(1, 7.1, diameter_mm=6.0)], rule).tp == 0
    small = [tcmb(0.0, diameter_mm=0.5)]
    assert match_case(small, [pcmb(1, 1.4, diameter_mm=0.5)], rule).tp == 1  # floor 1.5
    assert match_case(small, [pcmb(1, 1.6, diameter_mm=0.5)], rule).tp == 0
    # the apparent diameter is what the rule uses when known
    app = [tcmb(0.0, diameter_mm=2.0, diameter_apparent_mm=10.0)]
    assert match_case(app, [pcmb(1, 5.5, diameter_mm=2.0)], rule).tp == 1  # limit 6


def test_overlap_rule_uses_masks() -> None:
    aff = np.eye(4)
    t = np.zeros((8, 8, 8), np.int32)
    p = np.zeros_like(t)
    t[1:3, 1:3, 1:3] = 1  # 8 voxels
    p[2:4, 1:3, 1:3] = 5  # 8 voxels, 4 shared -> IoU 4/12
    p[6, 6, 6] = 6
    truth = [TruthCMB((1.5, 1.5, 1.5), label=1)]
    preds = [pcmb(5, 50.0), pcmb(6, 1.5, 1.5, 1.5)]  # centres deliberately misleading
    rule = MatchRule.parse("overlap")
    m = match_case(truth, preds, rule, truth_map=LabelMap(t, aff), pred_map=LabelMap(p, aff))
    assert m.tp == 1
    assert m.preds[m.pairs[0].pred_index].id == 5
    assert m.pairs[0].iou == pytest.approx(4 / 12)
    strict = MatchRule.parse("overlap:0.5")
    m = match_case(truth, preds, strict, truth_map=LabelMap(t, aff), pred_map=LabelMap(p, aff))
    assert m.tp == 0
    with pytest.raises(EvaluationInputError, match="label maps"):
        match_case(truth, preds, rule)


points = st.tuples(
    st.floats(-20, 20, allow_nan=False),
    st.floats(-20, 20, allow_nan=False),
    st.floats(-20, 20, allow_nan=False),
)


@settings(max_examples=60, deadline=None)
@given(
    truth_pts=st.lists(points, max_size=6),
    pred_pts=st.lists(st.tuples(points, st.floats(0, 1)), max_size=8),
    rule=st.sampled_from(["center:5", "size-aware", "valdo:3"]),
    seed=st.integers(0, 2**16),
)
def test_permuting_prediction_order_changes_nothing(
    truth_pts: list[tuple[float, float, float]],
    pred_pts: list[tuple[tuple[float, float, float], float]],
    rule: str,
    seed: int,
) -> None:
    truth = [TruthCMB(c, label=n + 1, diameter_mm=3.0) for n, c in enumerate(truth_pts)]
    preds = [PredCMB(n + 1, c, p, diameter_mm=2.0) for n, (c, p) in enumerate(pred_pts)]
    r = MatchRule.parse(rule)
    rng = np.random.default_rng(seed)
    a = match_case(truth, preds, r)
    shuffled = [preds[n] for n in rng.permutation(len(preds))]
    shuffled_truth = [truth[n] for n in rng.permutation(len(truth))]
    b = match_case(shuffled_truth, shuffled, r)

    def pairs(m: object) -> set[tuple[int | None, int]]:
        return {(m.truth[p.truth_index].label, m.preds[p.pred_index].id) for p in m.pairs}  # type: ignore[attr-defined]

    assert (a.tp, a.fp, a.fn) == (b.tp, b.fp, b.fn)
    assert pairs(a) == pairs(b)
