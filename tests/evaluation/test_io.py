"""Reading truth and predictions; pairing by case id; NIfTI geometry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evaluation.cases import LabelMap
from evaluation.errors import EvaluationInputError, UnpairedCasesError
from evaluation.io import (
    load_predictions,
    load_truth,
    load_truths,
    pair_cases,
    read_label_map,
    resample_like,
    write_label_map,
)
from model.errors import InputError
from tests.evaluation.conftest import detection, detections_json


def test_standard_layout(dataset: tuple[Path, Path]) -> None:
    pred, truth = dataset
    t = load_truth(truth)
    assert sorted(t) == ["c1", "c2"]
    c1 = t["c1"]
    assert c1.cmbs[0].label == 1
    assert c1.cmbs[0].diameter_mm == 3.0
    assert c1.cmbs[0].match_diameter_mm == 3.5
    assert c1.cmbs[1].mars == "deep"
    assert c1.acquisition["field_strength_t"] == 3.0
    assert c1.split == "val"
    assert c1.mask is not None
    assert c1.mask.load().array.max() == 2
    with pytest.raises(EvaluationInputError, match="no truth cases in split train"):
        load_truth(truth, split="train")
    p = load_predictions(pred)
    assert sorted(p) == ["c1", "c2"]
    assert [d.id for d in p["c1"].predictions()] == [1, 2]
    assert p["c1"].labels is not None
    assert p["c2"].detections == ()


def test_label_map_geometry_roundtrip(tmp_path: Path) -> None:
    aff = np.array(
        [[0.0, 0.0, -0.9, 10.0], [0.0, 1.1, 0.0, -5.0], [2.5, 0.0, 0.0, 3.0], [0, 0, 0, 1]]
    )
    arr = np.zeros((4, 5, 6), np.int32)
    arr[1, 2, 3] = 7
    write_label_map(LabelMap(arr, aff), tmp_path / "m.nii.gz")
    back = read_label_map(tmp_path / "m.nii.gz")
    assert np.array_equal(back.array, arr)
    assert np.allclose(back.affine, aff)
    # resampling onto a finer grid keeps the label at the same LPS position
    fine = aff.copy()
    fine[:3, :3] /= 2
    ref = LabelMap(np.zeros((8, 10, 12), np.int32), fine)
    moved = resample_like(back, ref)
    k, j, i = np.argwhere(moved.array == 7).mean(axis=0)
    assert np.allclose(moved.index_to_lps([k, j, i]), back.index_to_lps([1, 2, 3]), atol=0.8)


def test_point_annotations_and_flat_predictions(tmp_path: Path) -> None:
    points = {"a": [{"center_lps_mm": [1, 2, 3], "diameter_mm": 4}], "b": []}
    (tmp_path / "points.json").write_text(json.dumps(points))
    t = load_truth(tmp_path / "points.json")
    assert t["a"].cmbs[0].center_lps_mm == (1.0, 2.0, 3.0)
    assert t["a"].cmbs[0].diameter_mm == 4
    folder = tmp_path / "pts"
    folder.mkdir()
    (folder / "a.json").write_text(
        json.dumps({"cmbs": points["a"], "acquisition": {"sequence": "swi"}})
    )
    assert load_truth(folder)["a"].acquisition == {"sequence": "swi"}
    for truth in (tmp_path / "points.json", folder):  # they record no split: not all cases
        with pytest.raises(EvaluationInputError, match="--split val needs a standardized"):
            load_truth(truth, split="val")
    preds = tmp_path / "preds"
    preds.mkdir()
    rejected = detection(2, (1, 1, 1), 0.7, status="rejected", reject_reason="csf")
    (preds / "a.json").write_text(
        json.dumps(detections_json([detection(1, (1, 1, 1), 0.8), rejected]))
    )
    p = load_predictions(preds)["a"]
    assert [d.id for d in p.predictions()] == [1]
    assert [d.id for d in p.predictions(include_rejected=True)] == [1, 2]
    assert [d.id for d in p.predictions(threshold=0.85)] == []


def test_unpaired_cases_are_an_error_listing_ids(dataset: tuple[Path, Path]) -> None:
    pred, truth = dataset
    t, p = load_truth(truth), load_predictions(pred)
    del p["c2"]
    p["zz"] = p["c1"]
    with pytest.raises(UnpairedCasesError) as e:
        pair_cases(t, p)
    assert isinstance(e.value, InputError)
    assert "c2" in str(e.value)
    assert "zz" in str(e.value)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(EvaluationInputError, match="does not exist"):
        load_predictions(tmp_path / "nope")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(EvaluationInputError, match="cannot read JSON"):
        load_predictions(tmp_path)
    (tmp_path / "x.json").write_text(json.dumps({"detections": [{"id": 1}]}))
    with pytest.raises(EvaluationInputError, match="center_lps_mm"):
        load_predictions(tmp_path)


def test_truth_without_masks_does_not_need_the_label_files(dataset: tuple[Path, Path]) -> None:
    """A points-only evaluation (``cmb evaluate --no-masks``) of a folder whose label maps
    were not copied: the files are neither checked nor kept; with masks they are an error."""
    _, truth = dataset
    shutil.rmtree(truth / "labels")
    with pytest.raises(EvaluationInputError, match=r"label mask .* is missing"):
        load_truth(truth)
    t = load_truth(truth, masks=False)
    assert sorted(t) == ["c1", "c2"]
    assert t["c1"].mask is None and len(t["c1"].cmbs) == 2


def test_several_truth_sets_pool_and_a_shared_case_id_is_an_error(
    dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    """Two sets' truth pooled (each set's label paths relative to its own folder); the
    same case id in both cannot be paired with one prediction, so it is refused."""
    _, truth = dataset
    other = tmp_path / "other"
    other.mkdir()
    (other / "points.json").write_text(json.dumps({"c3": [{"center_lps_mm": [1.0, 2.0, 3.0]}]}))
    pooled = load_truths([truth, other / "points.json"])
    assert sorted(pooled) == ["c1", "c2", "c3"]
    assert pooled["c1"].mask is not None and pooled["c1"].mask.load().array.max() == 2
    with pytest.raises(EvaluationInputError, match="case c1 is in two truth sets"):
        load_truths([truth, truth])
    with pytest.raises(EvaluationInputError, match="no truth folder"):
        load_truths([])
    # a split that one pooled set lacks is not an error ...
    (other / "cases.jsonl").write_text(json.dumps({"case_id": "c9", "split": "train"}) + "\n")
    assert sorted(load_truths([truth, other], split="val")) == ["c1", "c2"]
    assert sorted(load_truths([truth, other], split="train")) == ["c9"]
    # ... unless the whole pool lacks it
    with pytest.raises(EvaluationInputError, match=r"no truth cases in .* in split test"):
        load_truths([truth, other], split="test")
