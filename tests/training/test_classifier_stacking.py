"""training.classifier.stacking: cross-validated stacked scores on filter-effect records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.errors import InputError
from training.classifier.stacking import MODELS, compare, labels, main


def _candidate(id_: int, center: list[float], classifier: float, unet: float) -> dict[str, Any]:
    logit = float(np.log(classifier / (1 - classifier)))
    features = {
        "classifier_logit": logit,
        "unet_logit": float(np.log(unet / (1 - unet))),
        "unet_mean_logit": 0.0,
        "log_diameter_mm": 1.0,
        "elongation": 1.2,
        "slice_mm": 1.0,
        "inplane_mm": 0.7,
    }
    return {
        "detection": {
            "id": id_,
            "center_lps_mm": center,
            "probability": classifier,
            "diameter_mm": 3.0,
        },
        "rejected_by": {"none": None, "defaults": None},
        "features": features,
        "region": {"parenchyma_fraction": 0.9, "distance_cortex_mm": float("inf")},
        "dark_structure": None,
    }


def _cases(n: int = 60, seed: int = 0) -> list[dict[str, Any]]:
    """Each case: one true CMB whose classifier score is no better than the false candidates'
    (uniform 0.5-0.99 for both), but the U-Net is sure of the CMB (0.95) and not of the false
    ones (0.35): a stacked score finds every CMB, the classifier alone few at 0.5 FP/scan."""
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(n):
        truth = [{"center_lps_mm": [0.0] * 3, "diameter_mm": 3.0, "diameter_apparent_mm": 3.0}]
        cands = [_candidate(1, [0.5, 0.0, 0.0], float(rng.uniform(0.5, 0.99)), 0.95)]
        cands += [
            _candidate(m + 2, [30.0 + 15 * m, 0.0, 0.0], float(rng.uniform(0.5, 0.99)), 0.35)
            for m in range(4)
        ]
        cases.append({"case_id": f"c{k:02d}", "truth": truth, "candidates": cands})
    return cases


def test_labels_match_candidates_to_true_cmbs() -> None:
    assert labels(_cases(2)).tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0]


def test_a_stacked_score_that_reads_the_unet_finds_what_the_classifier_alone_misses() -> None:
    rows = compare(_cases(), folds=4)
    assert list(rows) == ["classifier alone", *MODELS]
    alone = rows["classifier alone"]
    assert alone["fp_per_scan"] <= 0.5 and alone["tp"] < 10
    for name in MODELS:  # 45 true candidates in each fit: enough for the boosted trees' leaves
        assert rows[name]["tp"] == 60 and rows[name]["fp"] == 0, name


def test_candidates_without_features_and_too_few_cases_are_refused() -> None:
    cases = _cases(4)
    with pytest.raises(InputError, match="cannot make 5 folds"):
        compare(cases, folds=5)
    del cases[1]["candidates"][2]["features"]
    with pytest.raises(InputError, match="without features"):
        compare(cases, folds=2)


def test_command_prints_the_table_and_writes_the_rows(tmp_path: Path, capsys) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in _cases()))
    assert main(["--cases", str(path), "--folds", "4", "--out", str(tmp_path / "rows.json")]) == 0
    printed = capsys.readouterr().out
    assert "| classifier alone |" in printed and "| gradient boosting, and location |" in printed
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert rows["logistic, and location"]["tp"] == 60
    with pytest.raises(SystemExit) as exc:
        main(["--cases", str(path), "--folds", "1"])
    assert exc.value.code == 2
