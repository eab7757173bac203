"""Local CNR of true CMBs, and the evaluation's ``local_cnr`` stratum."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.api import EvaluationConfig, evaluate
from evaluation.cases import LabelMap
from evaluation.conspicuity import CNR_BINS, measure_lesion
from evaluation.io import read_image, write_label_map
from evaluation.report import write_report
from evaluation.stratify import bin_label
from tests.evaluation.conftest import SHAPE, affine
from tests.helpers.lesion_phantom import lesion_phantom


def test_a_dark_spot_has_a_high_cnr_and_a_faint_one_a_low_one() -> None:
    image, labels = lesion_phantom()
    dark = measure_lesion(image, labels, 1)
    faint = measure_lesion(image, labels, 2)
    assert dark["n_voxels"] == 2 * 13 and dark["section_voxels"] == 13
    assert dark["cnr"] == pytest.approx(40.0, rel=0.15)  # the -1000 voxel is not in the ring
    assert faint["cnr"] == pytest.approx(1.5, abs=0.6)
    assert faint["rose"] == pytest.approx(faint["cnr"] * np.sqrt(13), rel=1e-3)
    assert measure_lesion(image, labels, 4) == {"n_voxels": 0, "cnr": None, "rose": None}
    with pytest.raises(ValueError, match="differ in shape"):
        measure_lesion(image[1:], labels, 1)


def _write_images(truth: Path, grid: np.ndarray) -> np.ndarray:
    """Images for the ``dataset`` fixture's cases: noise around 100, CMB 1 (label 1) at 20,
    CMB 2 (label 2) at 97; returns c1's label map."""
    labels = read_image(truth / "labels" / "c1.nii.gz")[0]
    rng = np.random.default_rng(1)
    (truth / "images").mkdir(exist_ok=True)
    for cid in ("c1", "c2"):
        image = np.rint(rng.normal(100.0, 2.0, SHAPE)).astype(np.int32)
        if cid == "c1":
            image[labels == 1] = 20
            image[labels == 2] = 97
        write_label_map(LabelMap(image, grid), truth / "images" / f"{cid}.nii.gz")
    return labels


def test_local_cnr_stratum_counts_recall_of_the_true_cmbs_only(
    dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    pred, truth = dataset
    labels = _write_images(truth, affine())
    image = read_image(truth / "images" / "c1.nii.gz")[0]
    faint = bin_label(measure_lesion(image, labels, 2)["cnr"], CNR_BINS)
    assert faint in ("1-2", "<1", "2-3")
    result = evaluate(pred, truth, EvaluationConfig(n_bootstrap=0))
    table = result.metrics["stratified"]["cmb"]["local_cnr"]
    assert set(table) == {">=5", faint}
    assert table[">=5"] | {"dice_per_cmb": None} == {
        "n_truth": 1,
        "tp": 1,
        "fn": 0,
        "fp": None,
        "recall": 1.0,
        "precision": None,
        "dice_per_cmb": None,
    }
    assert (table[faint]["n_truth"], table[faint]["tp"]) == (1, 0)
    json.dumps(result.metrics)  # metrics.json stays serialisable
    write_report(result, tmp_path)
    assert "By CMB local_cnr" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "recall_by_local_cnr.png").read_bytes()[:4] == b"\x89PNG"


def test_local_cnr_is_left_out_without_a_readable_image_on_the_label_grid(
    dataset: tuple[Path, Path],
) -> None:
    pred, truth = dataset
    config = EvaluationConfig(n_bootstrap=0)
    assert "local_cnr" not in evaluate(pred, truth, config).metrics["stratified"]["cmb"]
    shifted = affine()
    shifted[:3, 3] += 2.0
    _write_images(truth, shifted)  # another grid: no CNR rather than a wrong one
    assert "local_cnr" not in evaluate(pred, truth, config).metrics["stratified"]["cmb"]
    _write_images(truth, affine())
    points_only = EvaluationConfig(n_bootstrap=0, use_masks=False)
    assert "local_cnr" not in evaluate(pred, truth, points_only).metrics["stratified"]["cmb"]
