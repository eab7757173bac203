"""Scan-level classification and FROC per acquisition stratum, computed by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evaluation.api import EvaluationConfig, EvaluationResult, evaluate_cases
from evaluation.cases import CasePrediction, CaseTruth, PredCMB
from evaluation.report import froc_plot_name, write_report


def _pred(ident: int, x: float, prob: float) -> PredCMB:
    return PredCMB(id=ident, center_lps_mm=(x, 0.0, 0.0), probability=prob, mars="lobar")


def _evaluate(threshold: float | None = None) -> EvaluationResult:
    """Four scans (CMBs and predictions along x, 20 mm apart; centre rule 5 mm).

    a  3 T   SIEMENS  truth x=0          preds x=0 (0.9, TP), x=20 (0.4, FP)
    b  3 T   GE       no CMB             pred  x=0 (0.6, FP)
    c  1.5 T SIEMENS  truth x=0, x=20    pred  x=1 (0.7, TP on x=0)
    d  1.5 T GE       no CMB             no prediction
    """
    spec: dict[str, Any] = {
        "a": (3.0, "SIEMENS", [0.0], [(1, 0.0, 0.9), (2, 20.0, 0.4)]),
        "b": (3.0, "GE", [], [(1, 0.0, 0.6)]),
        "c": (1.5, "SIEMENS", [0.0, 20.0], [(1, 1.0, 0.7)]),
        "d": (1.5, "GE", [], []),
    }
    truth, preds = {}, {}
    for cid, (field, vendor, xs, dets) in spec.items():
        points = [{"center_lps_mm": [x, 0.0, 0.0], "diameter_mm": 3.0} for x in xs]
        acq = {"field_strength_t": field, "manufacturer": vendor}
        truth[cid] = CaseTruth.from_points(cid, points, acq)
        preds[cid] = CasePrediction(cid, tuple(_pred(*d) for d in dets))
    return evaluate_cases(truth, preds, EvaluationConfig(threshold=threshold, n_bootstrap=0))


def test_classification_per_scan_stratum() -> None:
    scan = _evaluate().metrics["stratified"]["scan"]
    # 3 T: a positive & flagged (TP), b negative & flagged (FP); scores 0.9 > 0.6
    c3 = scan["field_strength"]["3 T"]["classification"]
    assert (c3["tp"], c3["fn"], c3["tn"], c3["fp"]) == (1, 0, 0, 1)
    assert c3["sensitivity"] == 1.0 and c3["specificity"] == 0.0 and c3["auc"] == 1.0
    # 1.5 T: c positive & flagged, d negative & clean; scores 0.7 > 0.0
    c15 = scan["field_strength"]["1.5 T"]["classification"]
    assert c15["sensitivity"] == 1.0 and c15["specificity"] == 1.0 and c15["auc"] == 1.0
    # one class only: AUC undefined (null), and the missing side's rate too
    siemens = scan["vendor"]["SIEMENS"]["classification"]
    assert siemens["sensitivity"] == 1.0 and siemens["specificity"] is None
    assert siemens["auc"] is None
    ge = scan["vendor"]["GE"]["classification"]
    assert ge["sensitivity"] is None and ge["specificity"] == 0.5 and ge["auc"] is None


def test_froc_per_scan_stratum() -> None:
    scan = _evaluate().metrics["stratified"]["scan"]
    # 3 T, 1 CMB, 2 scans: (0 FP, 0) then at t=0.9 (0, 1), 0.7 (0, 1), 0.6 (0.5, 1), 0.4 (1, 1)
    f3 = scan["field_strength"]["3 T"]["froc"]
    assert [(p["fp_per_scan"], p["sensitivity"]) for p in f3["points"]] == [
        (0.0, 0.0),
        (0.0, 1.0),
        (0.0, 1.0),
        (0.5, 1.0),
        (1.0, 1.0),
    ]
    assert f3["cpm"] == 1.0
    op = f3["operating_point"]  # every kept detection: TP a, FP a and b
    assert (op["tp"], op["fp"], op["sensitivity"], op["fp_per_scan"]) == (1, 2, 1.0, 1.0)
    # 1.5 T, 2 CMBs: c's prediction (0.7) finds one of them, never a FP -> 0.5 at every rate
    f15 = scan["field_strength"]["1.5 T"]["froc"]
    assert f15["cpm"] == 0.5
    assert f15["operating_point"]["sensitivity"] == 0.5
    assert f15["operating_point"]["fp_per_scan"] == 0.0
    # SIEMENS (a, c), 3 CMBs: 2/3 found with 0 FP from t=0.7 on -> CPM 2/3
    assert scan["vendor"]["SIEMENS"]["froc"]["cpm"] == pytest.approx(2 / 3)
    # GE: no CMB, sensitivity undefined -> CPM null
    assert scan["vendor"]["GE"]["froc"]["cpm"] is None
    assert scan["vendor"]["GE"]["froc"]["operating_point"]["fp_per_scan"] == 0.5


def test_strata_follow_the_evaluated_threshold() -> None:
    scan = _evaluate(threshold=0.65).metrics["stratified"]["scan"]
    c3 = scan["field_strength"]["3 T"]["classification"]
    assert c3["specificity"] == 1.0  # b's 0.6 no longer counts
    op = scan["field_strength"]["3 T"]["froc"]["operating_point"]
    assert (op["threshold"], op["sensitivity"], op["fp_per_scan"]) == (0.65, 1.0, 0.0)


def test_cmb_strata_carry_no_scan_level_metrics() -> None:
    strat = _evaluate().metrics["stratified"]
    assert "size" in strat["cmb"]
    assert all("classification" not in d and "froc" not in d for d in strat["cmb"]["size"].values())
    assert "not stratified by CMB size" in strat["cmb_note"]


def test_report_shows_stratified_scan_metrics(tmp_path: Path) -> None:
    files = write_report(_evaluate(), tmp_path)
    assert froc_plot_name("field_strength") in files
    assert (tmp_path / froc_plot_name("field_strength")).stat().st_size > 0
    # GE has no CMB (no curve): one curve is no comparison, so no vendor plot
    assert froc_plot_name("vendor") not in files
    md = (tmp_path / "report.md").read_text()
    assert "| scan sens | scan spec | scan AUC | FROC CPM |" in md
    # 3 T row: recall 1, precision 1/3, F1 0.5, 1 FP/scan, sens 1, spec 0, AUC 1, CPM 1
    assert "| 3 T | 2 | 1 | 1.000 | 0.333 | 0.500 | 1.00 | 1.000 | 0.000 | 1.000 | 1.000 |" in md
    assert "Note: scan-level metrics" in md
    assert "scan AUC" in (tmp_path / "report.html").read_text()


def test_region_rows_join_freesurfer_and_location_filter_spellings() -> None:
    """Truth says "Left-Cerebral-White-Matter", the filter "left cerebral white matter": one row,
    holding the TP and the FP; an unknown spelling keeps a row of its own."""
    from evaluation.stratify import region_name

    assert region_name("Right-VentralDC") == "right ventral DC"
    assert region_name("Brain-Stem") == "brain-stem"
    assert region_name("somewhere else") == "somewhere else"
    assert region_name(None) is None
    truth = {
        "a": CaseTruth.from_points(
            "a",
            [
                {
                    "center_lps_mm": [0.0, 0.0, 0.0],
                    "diameter_mm": 3,
                    "region": "Left-Cerebral-White-Matter",
                },
                {"center_lps_mm": [40.0, 0.0, 0.0], "diameter_mm": 3, "region": "Left-Putamen"},
            ],
        )
    }
    wm = "left cerebral white matter"
    preds = {
        "a": CasePrediction(
            "a",
            (
                PredCMB(id=1, center_lps_mm=(0.5, 0.0, 0.0), probability=0.9, region=wm),
                PredCMB(id=2, center_lps_mm=(20.0, 0.0, 0.0), probability=0.9, region=wm),
            ),
        )
    }
    rows = evaluate_cases(truth, preds, EvaluationConfig(n_bootstrap=0)).metrics["stratified"]
    region = rows["cmb"]["region"]
    assert set(region) == {wm, "left putamen"}
    assert (region[wm]["tp"], region[wm]["fp"], region[wm]["n_truth"]) == (1, 1, 1)


def test_synthetic_contrast_is_a_scan_stratum_of_synthetic_cases_only() -> None:
    """The engine's contrast_mode splits the scans; a case without it goes to unknown."""
    points = [{"center_lps_mm": [0.0, 0.0, 0.0], "diameter_mm": 3.0}]
    truth = {
        "p": CaseTruth.from_points("p", points, {"contrast_mode": "prior"}),
        "r": CaseTruth.from_points("r", points, {"contrast_mode": "random"}),
        "x": CaseTruth.from_points("x", points, {"sequence": "swi"}),
    }
    preds = {
        "p": CasePrediction("p", (_pred(1, 0.0, 0.9),)),
        "r": CasePrediction("r", ()),
        "x": CasePrediction("x", ()),
    }
    scan = evaluate_cases(truth, preds, EvaluationConfig(n_bootstrap=0)).metrics["stratified"]
    contrast = scan["scan"]["synthetic_contrast"]
    assert contrast["prior"]["recall"] == 1.0
    assert contrast["random"]["recall"] == 0.0
    assert contrast["unknown"]["n_truth"] == 1


def test_apparent_size_bins_the_apparent_diameter_and_false_positives_by_their_own(
    tmp_path: Path,
) -> None:
    """A 1.5 mm CMB that blooms to 3.5 mm is <2 mm by size and 3-5 mm by apparent size."""
    points = [
        {"center_lps_mm": [0.0, 0.0, 0.0], "diameter_true_mm": 1.5, "diameter_apparent_mm": 3.5},
        {"center_lps_mm": [20.0, 0.0, 0.0], "diameter_true_mm": 1.0, "diameter_apparent_mm": 1.8},
    ]
    truth = {"a": CaseTruth.from_points("a", points, {})}
    fp = PredCMB(id=2, center_lps_mm=(40.0, 0.0, 0.0), probability=0.9, diameter_mm=6.0)
    preds = {"a": CasePrediction("a", (_pred(1, 0.0, 0.9), fp))}
    result = evaluate_cases(truth, preds, EvaluationConfig(n_bootstrap=0))
    cmb = result.metrics["stratified"]["cmb"]
    assert cmb["size"]["<2 mm"]["n_truth"] == 2
    assert cmb["size"]["<2 mm"]["tp"] == 1
    apparent = cmb["apparent_size"]
    assert apparent["3-5 mm"] == {**apparent["3-5 mm"], "n_truth": 1, "tp": 1, "fp": 0}
    assert apparent["<2 mm"]["n_truth"] == 1
    assert apparent["<2 mm"]["tp"] == 0
    assert apparent["5-10 mm"]["fp"] == 1  # the false positive, by its own measured diameter
    assert apparent["5-10 mm"]["n_truth"] == 0
    rows = result.per_cmb_rows()
    by_kind = {(r["kind"], r["index"]): r for r in rows}
    assert by_kind[("truth", 0)]["size_bin"] == "<2 mm"
    assert by_kind[("truth", 0)]["diameter_apparent_mm"] == 3.5
    assert by_kind[("truth", 0)]["apparent_size_bin"] == "3-5 mm"
    assert by_kind[("pred", 1)]["apparent_size_bin"] == "5-10 mm"
    write_report(result, tmp_path)
    assert (tmp_path / "recall_by_apparent_size.png").read_bytes()[:4] == b"\x89PNG"
    assert "By CMB apparent_size" in (tmp_path / "report.md").read_text()


def test_apparent_size_is_left_out_when_no_truth_records_it(tmp_path: Path) -> None:
    result = _evaluate()
    assert "apparent_size" not in result.metrics["stratified"]["cmb"]
    write_report(result, tmp_path)
    assert (tmp_path / "recall_by_size.png").is_file()
    assert not (tmp_path / "recall_by_apparent_size.png").exists()
