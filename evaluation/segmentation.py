"""Segmentation metrics: Dice per matched CMB and per scan, volume and count differences.

* Dice per matched CMB: 2 |T ∩ P| / (|T| + |P|) of the true instance (label
  ``TruthCMB.label``) and the matched predicted instance (label = detection id).
  Needs both label maps.
* Dice per scan: the same on the binary masks (all true instances; the predicted
  instances that count as predictions).  A scan where both are empty has no
  Dice (0/0) and is excluded; a scan with masks on one side only is skipped.
* Volume difference per scan: predicted minus true lesion volume in mm³
  (voxel count × voxel volume); reported signed and absolute.
* Count difference per scan: predicted minus true number of CMBs (needs no
  masks; every scan); reported signed and absolute.

The predicted label map must be on the truth grid (``evaluation.io.resample_like``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluation.cases import LabelMap
from evaluation.errors import EvaluationInputError
from evaluation.matching import CaseMatch, label_overlaps
from evaluation.stats import mean_sd


@dataclass(frozen=True)
class ScanSegmentation:
    """Segmentation results of one scan (``None`` where masks were missing)."""

    case_id: str
    dice: float | None
    truth_volume_mm3: float | None
    pred_volume_mm3: float | None
    count_difference: int
    cmb_dice: dict[int, float]  # truth index -> Dice with its matched prediction

    @property
    def volume_difference_mm3(self) -> float | None:
        if self.truth_volume_mm3 is None or self.pred_volume_mm3 is None:
            return None
        return self.pred_volume_mm3 - self.truth_volume_mm3


def scan_segmentation(
    match: CaseMatch, truth_map: LabelMap | None, pred_map: LabelMap | None
) -> ScanSegmentation:
    """Dice, volumes and count difference of one scan (see the module docstring)."""
    count_diff = match.n_pred - match.n_truth
    if truth_map is None or pred_map is None:
        return ScanSegmentation(match.case_id, None, None, None, count_diff, {})
    if not truth_map.same_grid(pred_map):
        raise EvaluationInputError(
            f"case {match.case_id}: truth and predicted label maps are on different grids"
        )
    voxel = truth_map.voxel_volume_mm3
    t_bin = np.asarray(truth_map.array) > 0
    pred_ids = np.array([p.id for p in match.preds], dtype=np.int64)
    p_bin = np.isin(np.asarray(pred_map.array), pred_ids) & (np.asarray(pred_map.array) > 0)
    nt, npred = int(t_bin.sum()), int(p_bin.sum())
    dice = 2.0 * int((t_bin & p_bin).sum()) / (nt + npred) if nt + npred else None
    inter, t_size, p_size = label_overlaps(truth_map, pred_map)
    cmb_dice: dict[int, float] = {}
    for pair in match.pairs:
        label = match.truth[pair.truth_index].label
        pid = match.preds[pair.pred_index].id
        if label is None:
            continue
        den = t_size.get(int(label), 0) + p_size.get(int(pid), 0)
        if den:
            cmb_dice[pair.truth_index] = 2.0 * inter.get((int(label), int(pid)), 0) / den
    return ScanSegmentation(match.case_id, dice, nt * voxel, npred * voxel, count_diff, cmb_dice)


def segmentation_metrics(scans: Sequence[ScanSegmentation]) -> dict[str, Any]:
    """Aggregate of ``scan_segmentation`` results over scans (mean ± SD, n, n excluded)."""
    with_masks = [s for s in scans if s.truth_volume_mm3 is not None]
    cmb_values: list[float | None] = [v for s in scans for v in s.cmb_dice.values()]
    vol = [s.volume_difference_mm3 for s in scans]
    return {
        "n_scans_with_masks": len(with_masks),
        "dice_per_cmb": mean_sd(cmb_values),
        "dice_per_scan": mean_sd([s.dice for s in scans]),
        "volume_difference_mm3": mean_sd(vol),
        "abs_volume_difference_mm3": mean_sd([abs(v) if v is not None else None for v in vol]),
        "count_difference": mean_sd([float(s.count_difference) for s in scans]),
        "abs_count_difference": mean_sd([float(abs(s.count_difference)) for s in scans]),
    }
