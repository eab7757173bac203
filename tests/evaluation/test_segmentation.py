"""Dice per matched CMB and per scan, volume and count differences, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.cases import LabelMap, PredCMB, TruthCMB
from evaluation.matching import match_case
from evaluation.segmentation import scan_segmentation, segmentation_metrics


def test_dice_volume_and_count_by_hand() -> None:
    aff = np.diag([2.0, 1.0, 1.0, 1.0])  # 2 mm slices: voxel volume 2 mm3
    t = np.zeros((8, 8, 8), np.int32)
    p = np.zeros_like(t)
    t[1:3, 1:3, 1:3] = 1  # 8 voxels
    t[5, 5, 5] = 2  # 1 voxel, missed
    p[1:3, 1:3, 1:2] = 7  # 4 voxels inside CMB 1
    p[6:8, 0:2, 0:2] = 8  # 8 voxels elsewhere (FP)
    truth = [TruthCMB((3.0, 1.5, 1.5), label=1), TruthCMB((10.0, 5.0, 5.0), label=2)]
    preds = [PredCMB(7, (3.0, 1.5, 1.0), 0.9), PredCMB(8, (13.0, 0.5, 0.5), 0.8)]
    m = match_case(truth, preds)
    assert m.tp == 1
    s = scan_segmentation(m, LabelMap(t, aff), LabelMap(p, aff))
    assert s.cmb_dice == {0: pytest.approx(2 * 4 / (8 + 4))}
    assert s.dice == pytest.approx(2 * 4 / (9 + 12))
    assert s.truth_volume_mm3 == pytest.approx(18.0)
    assert s.pred_volume_mm3 == pytest.approx(24.0)
    assert s.volume_difference_mm3 == pytest.approx(6.0)
    assert s.count_difference == 0

    # a scan with no masks still has a count difference; a scan with two empty masks no Dice
    no_masks = scan_segmentation(match_case([], [preds[0]]), None, None)
    empty = np.zeros((8, 8, 8), np.int32)
    both_empty = scan_segmentation(match_case([], []), LabelMap(empty, aff), LabelMap(empty, aff))
    agg = segmentation_metrics([s, no_masks, both_empty])
    assert agg["n_scans_with_masks"] == 2
    assert agg["dice_per_cmb"]["mean"] == pytest.approx(2 / 3)
    assert (agg["dice_per_scan"]["n"], agg["dice_per_scan"]["n_excluded"]) == (1, 2)
    assert agg["abs_volume_difference_mm3"]["mean"] == pytest.approx(3.0)  # (6 + 0) / 2
    assert agg["abs_count_difference"]["mean"] == pytest.approx(1 / 3)  # 0, 1, 0
