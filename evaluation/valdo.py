"""Inputs of the VALDO 2021 (Task 2, microbleeds) detection rule.

VALDO evaluates segmentation outputs: the predicted map is binarised at 0.5
(valdo.grand-challenge.org/Evaluation), its connected components are the
predicted elements, and elements are compared by their centres of mass.  We
therefore rebuild, per case:

* the true CMBs with their centre of mass taken from the truth label map (the
  annotated centre when there is no map or the label is absent from it);
* the predictions as the 26-connected components of ``probability >= 0.5`` of
  ``probability.nii.gz`` (probability = the component's maximum); without a
  probability map, the kept detections with centres of mass from
  ``labels.nii.gz`` when present, else their reported centres.

The matching itself is ``evaluation.matching`` with ``MatchKind.VALDO``
(centre-of-mass distance <= radius, one-to-one, duplicates are false positives).
"""

from __future__ import annotations

import math
from dataclasses import replace

import cc3d
import numpy as np
from scipy import ndimage

from evaluation.cases import CasePrediction, LabelMap, Point, PredCMB, TruthCMB

VALDO_THRESHOLD = 0.5


def centres_of_mass(label_map: LabelMap, labels: list[int]) -> dict[int, Point]:
    """LPS centre of mass of each listed label present in the map."""
    arr = np.asarray(label_map.array)
    in_map = {int(v) for v in np.unique(arr)}
    present = [n for n in labels if n > 0 and n in in_map]
    if not present:
        return {}
    coms = ndimage.center_of_mass(arr > 0, arr, present)
    out: dict[int, Point] = {}
    for n, com in zip(present, coms, strict=True):
        if np.all(np.isfinite(com)):
            x, y, z = label_map.index_to_lps(np.asarray(com, dtype=np.float64))
            out[n] = (float(x), float(y), float(z))
    return out


def valdo_truth(cmbs: tuple[TruthCMB, ...], label_map: LabelMap | None) -> tuple[TruthCMB, ...]:
    """True CMBs with centres of mass from the label map where available."""
    if label_map is None:
        return cmbs
    coms = centres_of_mass(label_map, [int(c.label) for c in cmbs if c.label is not None])
    return tuple(
        replace(c, center_lps_mm=coms[int(c.label)])
        if c.label is not None and int(c.label) in coms
        else c
        for c in cmbs
    )


def components(
    probability: np.ndarray, affine: np.ndarray, threshold: float = VALDO_THRESHOLD
) -> tuple[tuple[PredCMB, ...], LabelMap]:
    """Predicted elements: 26-connected components of ``probability >= threshold``."""
    labels = np.asarray(cc3d.connected_components(probability >= threshold, connectivity=26))
    label_map = LabelMap(array=labels.astype(np.int32), affine=affine)
    n = int(labels.max())
    if n == 0:
        return (), label_map
    ids = list(range(1, n + 1))
    coms = centres_of_mass(label_map, ids)
    peaks = ndimage.maximum(probability, labels, ids)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, ids)
    voxel = label_map.voxel_volume_mm3
    preds = []
    for n_id, peak, size in zip(ids, peaks, sizes, strict=True):
        volume = float(size) * voxel
        preds.append(
            PredCMB(
                id=n_id,
                center_lps_mm=coms[n_id],
                probability=float(min(max(peak, 0.0), 1.0)),
                volume_mm3=volume,
                diameter_mm=2.0 * (3.0 * volume / (4.0 * math.pi)) ** (1.0 / 3.0),
            )
        )
    return tuple(preds), label_map


def valdo_predictions(
    case: CasePrediction,
    probability: np.ndarray | None,
    prob_affine: np.ndarray | None,
    labels: LabelMap | None,
    include_rejected: bool = False,
) -> tuple[tuple[PredCMB, ...], LabelMap | None]:
    """The predicted elements of one case (see the module docstring)."""
    if probability is not None and prob_affine is not None:
        return components(probability, prob_affine)
    preds = case.predictions(include_rejected=include_rejected)
    if labels is None:
        return preds, None
    coms = centres_of_mass(labels, [p.id for p in preds])
    return tuple(replace(p, center_lps_mm=coms.get(p.id, p.center_lps_mm)) for p in preds), labels
