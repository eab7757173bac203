"""evaluate() on folders and evaluate_cases() in memory, with every rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.api import EvaluationConfig, evaluate, evaluate_cases
from evaluation.cases import CasePrediction, CaseTruth, LabelMap, MaskSource, TruthCMB
from evaluation.io import write_label_map
from evaluation.matching import MatchRule
from model.types import Detection
from tests.evaluation.conftest import SHAPE, affine, cube


@pytest.mark.parametrize("rule", ["center:5", "size-aware", "overlap", "valdo"])
def test_folder_evaluation_all_rules(dataset: tuple[Path, Path], rule: str) -> None:
    pred, truth = dataset
    r = evaluate(pred, truth, EvaluationConfig(rule=MatchRule.parse(rule), n_bootstrap=50))
    g = r.metrics["detection"]["global"]
    assert g["counts"] == {"n_scans": 2, "n_truth": 2, "n_pred": 2, "tp": 1, "fp": 1, "fn": 1}
    assert r.scalars()["recall"] == 0.5
    assert r.metrics["segmentation"]["dice_per_cmb"]["mean"] == pytest.approx(1.0)
    # per-scan Dice of c1: truth 54 voxels, prediction 54, shared 27 -> 0.5; c2 empty -> excluded
    assert r.metrics["segmentation"]["dice_per_scan"]["mean"] == pytest.approx(0.5)
    assert r.metrics["segmentation"]["dice_per_scan"]["n_excluded"] == 1
    json.dumps(r.to_json(), allow_nan=False)


def test_stratification_and_per_cmb_rows(dataset: tuple[Path, Path]) -> None:
    pred, truth = dataset
    r = evaluate(pred, truth, EvaluationConfig(n_bootstrap=0))
    scan = r.metrics["stratified"]["scan"]
    assert scan["field_strength"]["3 T"]["recall"] == 0.5
    assert scan["field_strength"]["1.5 T"]["n_truth"] == 0
    assert scan["vendor"] == {"SIEMENS": scan["vendor"]["SIEMENS"]}
    assert set(scan) >= {"sequence", "echo_time", "slice_thickness", "acquisition_type"}
    assert "synthetic_contrast" not in scan  # no case has a contrast_mode: omitted
    cmb = r.metrics["stratified"]["cmb"]
    assert cmb["mars"]["lobar"]["recall"] == 1.0
    assert cmb["mars"]["deep"]["recall"] == 0.0
    # the FP (predicted MARS "deep") counts against precision of "deep"
    assert cmb["mars"]["deep"]["fp"] == 1
    assert cmb["mars"]["deep"]["precision"] == 0.0
    assert cmb["size"]["3-5 mm"]["n_truth"] == 2
    rows = r.per_cmb_rows()
    outcomes = sorted((row["kind"], row["outcome"]) for row in rows)
    assert outcomes == [("pred", "FP"), ("pred", "TP"), ("truth", "FN"), ("truth", "TP")]


def test_threshold_and_rejected_detections(dataset: tuple[Path, Path]) -> None:
    pred, truth = dataset
    r = evaluate(pred, truth, EvaluationConfig(threshold=0.5, n_bootstrap=0))
    assert r.metrics["detection"]["global"]["counts"]["fp"] == 0
    op = r.metrics["froc"]["operating_point"]
    assert op["threshold"] == 0.5
    assert op["sensitivity"] == 0.5
    assert op["fp_per_scan"] == 0.0


def test_in_memory_with_model_detections() -> None:
    """The training path: model.types.Detection objects and arrays, no files."""
    t = np.zeros(SHAPE, np.int32)
    cube(t, (4, 4, 4), 1)
    truth = {
        "x": CaseTruth(
            "x",
            (TruthCMB((-4.0, -4.0, -4.0), label=1, diameter_mm=3.0),),
            mask=MaskSource(label_map=LabelMap(t, affine())),
        )
    }
    dets = [
        Detection(
            id=3,
            center_lps_mm=(-4.0, -4.0, -3.0),
            diameter_mm=3.0,
            volume_mm3=27.0,
            probability=0.8,
        ),
        Detection(
            id=4, center_lps_mm=(5.0, 5.0, 5.0), diameter_mm=3.0, volume_mm3=27.0, probability=0.7
        ),
    ]
    dets[1].reject("outside brain")
    p = np.zeros(SHAPE, np.int32)
    cube(p, (5, 4, 4), 3)
    preds = {"x": CasePrediction.from_detections("x", dets, labels=LabelMap(p, affine()))}
    r = evaluate_cases(truth, preds, EvaluationConfig(n_bootstrap=0))
    assert r.scalars()["recall"] == 1.0
    assert r.scalars()["precision"] == 1.0
    assert r.scalars()["dice_per_cmb"] == pytest.approx(2 * 18 / 54)
    r2 = evaluate_cases(truth, preds, EvaluationConfig(n_bootstrap=0, include_rejected=True))
    assert r2.scalars()["precision"] == 0.5


def test_no_prediction_means_an_empty_predicted_mask() -> None:
    t = np.zeros(SHAPE, np.int32)
    cube(t, (4, 4, 4), 1)
    truth = {
        "x": CaseTruth(
            "x",
            (TruthCMB((-4.0, -4.0, -4.0), label=1),),
            mask=MaskSource(label_map=LabelMap(t, affine())),
        )
    }
    preds = {"x": CasePrediction("x", ())}  # no detection, no labels file
    seg = evaluate_cases(truth, preds, EvaluationConfig(n_bootstrap=0)).metrics["segmentation"]
    assert seg["dice_per_scan"]["mean"] == 0.0
    assert seg["abs_volume_difference_mm3"]["mean"] == pytest.approx(27.0)


def test_valdo_uses_probability_components(tmp_path: Path) -> None:
    """VALDO: elements are components of probability >= 0.5, compared by centre of mass."""
    truth_dir, pred_dir = tmp_path / "t", tmp_path / "p" / "v1"
    (truth_dir / "labels").mkdir(parents=True)
    pred_dir.mkdir(parents=True)
    t = np.zeros(SHAPE, np.int32)
    cube(t, (4, 4, 4), 1)
    write_label_map(LabelMap(t, affine()), truth_dir / "labels" / "v1.nii.gz")
    rec = {
        "case_id": "v1",
        "label": "labels/v1.nii.gz",
        "cmbs": [{"label": 1, "center_lps_mm": [0.0, 0.0, 0.0]}],
    }  # annotated centre is off
    (truth_dir / "cases.jsonl").write_text(json.dumps(rec) + "\n")
    prob = np.zeros(SHAPE, np.float32)
    prob[3:6, 3:6, 3:6] = 0.7  # on the CMB
    prob[12, 12, 12] = 0.9  # a one-voxel FP component
    prob[8, 2, 2] = 0.4  # below 0.5: not an element
    import SimpleITK as sitk

    from evaluation.io import to_sitk

    sitk.WriteImage(to_sitk(prob, affine()), str(pred_dir / "probability.nii.gz"))
    (pred_dir / "detections.json").write_text(json.dumps({"detections": []}))
    valdo = evaluate(
        tmp_path / "p", truth_dir, EvaluationConfig(rule=MatchRule.parse("valdo"), n_bootstrap=0)
    )
    c = valdo.metrics["detection"]["global"]["counts"]
    assert (c["tp"], c["fp"], c["fn"]) == (1, 1, 0)
    centre = evaluate(tmp_path / "p", truth_dir, EvaluationConfig(n_bootstrap=0))
    assert centre.metrics["detection"]["global"]["counts"]["n_pred"] == 0
