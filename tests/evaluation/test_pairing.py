"""Pairing predictions named by StudyInstanceUID (``cmb detect``) with truth case ids."""

from __future__ import annotations

import pytest

from evaluation.cases import CasePrediction, CaseTruth
from evaluation.errors import EvaluationInputError, UnpairedCasesError
from evaluation.io import pair_cases


def _truth(cid: str, uid: str | None) -> CaseTruth:
    return CaseTruth(cid, (), study_instance_uid=uid)


def test_same_ids_pair_directly() -> None:
    t = {"c1": _truth("c1", "1.2.1")}
    p = {"c1": CasePrediction("c1", (), study_instance_uid="9.9")}
    ((tc, pc),) = pair_cases(t, p)
    assert tc.case_id == pc.case_id == "c1"


def test_pairs_through_study_instance_uid() -> None:
    t = {"c1": _truth("c1", "1.2.1"), "c2": _truth("c2", "1.2.2"), "c3": _truth("c3", None)}
    p = {
        # named by the uid, the uid in detections.json too
        "1.2.1": CasePrediction("1.2.1", (), study_instance_uid="1.2.1"),
        # a folder named by the uid whose detections.json lacks it
        "1.2.2": CasePrediction("1.2.2", ()),
        "c3": CasePrediction("c3", ()),
    }
    pairs = pair_cases(t, p)
    assert [(a.case_id, b.case_id) for a, b in pairs] == [("c1", "c1"), ("c2", "c2"), ("c3", "c3")]
    assert pairs[0][1].study_instance_uid == "1.2.1"


def test_unmatched_uids_still_list_every_id() -> None:
    t = {"c1": _truth("c1", "1.2.1"), "c2": _truth("c2", None)}
    p = {"1.2.1": CasePrediction("1.2.1", ()), "7.7.7": CasePrediction("7.7.7", ())}
    with pytest.raises(UnpairedCasesError) as e:
        pair_cases(t, p)
    assert e.value.missing_pred == ["c2"] and e.value.missing_truth == ["7.7.7"]
    assert "c2" in str(e.value) and "7.7.7" in str(e.value)


def test_two_predictions_of_one_study_are_an_error() -> None:
    t = {"c1": _truth("c1", "1.2.1")}
    p = {
        "1.2.1": CasePrediction("1.2.1", ()),
        "other": CasePrediction("other", (), study_instance_uid="1.2.1"),
    }
    with pytest.raises(EvaluationInputError, match="two predictions"):
        pair_cases(t, p)


def test_a_uid_shared_by_truth_cases_is_an_error() -> None:
    t = {"c1": _truth("c1", "1.2.1"), "c2": _truth("c2", "1.2.1")}
    p = {"1.2.1": CasePrediction("1.2.1", ())}
    with pytest.raises(EvaluationInputError, match="several truth cases"):
        pair_cases(t, p)
