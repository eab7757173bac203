"""Predicted masks from our own DICOM SEG give the same Dice as the label map itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.api import EvaluationConfig, evaluate
from evaluation.cases import LabelMap
from evaluation.io import write_label_map
from evaluation.matching import MatchRule
from model.dicom_out import write_outputs
from tests.model.dicom_out.conftest import build_case


@pytest.mark.parametrize("geometry", ["axial", "oblique"])
def test_seg_predictions_overlap_rule(tmp_path: Path, geometry: str) -> None:
    case = build_case(tmp_path, geometry)
    result = case.result
    pred = tmp_path / "pred" / "s1"
    pred.mkdir(parents=True)
    write_outputs(result, case.datasets, pred, ("seg",))
    (pred / "detections.json").write_text(json.dumps(result.to_json()))
    truth = tmp_path / "truth"
    (truth / "labels").mkdir(parents=True)
    labels = LabelMap(result.labels.array.astype(np.int32), result.labels.affine)
    write_label_map(labels, truth / "labels" / "s1.nii.gz")
    cmbs = [
        {"label": d.id, "center_lps_mm": list(d.center_lps_mm), "diameter_true_mm": 3.2}
        for d in result.detections
    ]
    rec = {"case_id": "s1", "label": "labels/s1.nii.gz", "cmbs": cmbs}
    (truth / "cases.jsonl").write_text(json.dumps(rec) + "\n")

    r = evaluate(
        tmp_path / "pred", truth, EvaluationConfig(rule=MatchRule.parse("overlap"), n_bootstrap=0)
    )
    counts = r.metrics["detection"]["global"]["counts"]
    # detection 3 was rejected by the location filter: not in the SEG, not a prediction
    assert (counts["tp"], counts["fp"], counts["fn"]) == (2, 0, 1)
    assert r.metrics["segmentation"]["dice_per_cmb"]["mean"] == pytest.approx(1.0)
