"""Predicted masks from a DICOM Segmentation (``seg.dcm`` beside detections.json).

The SEG is read with highdicom (``Segmentation.get_volume``: array
``[slice, row, column]`` with an affine to LPS, the project convention).  Each
connected component of each segment becomes one instance, so both layouts
work: one segment per CMB (our own SEG) and one segment per category (other
tools).  Instances are then given the id of the detection they belong to by
matching their centres of mass to the detections' centres (Hungarian, centre
distance <= 5 mm); an instance without a detection keeps a fresh id above
every detection id, so it never counts as a prediction's mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cc3d
import numpy as np

from evaluation.cases import LabelMap, PredCMB, TruthCMB
from evaluation.errors import EvaluationInputError
from evaluation.matching import MatchRule, match_case
from evaluation.valdo import centres_of_mass


def read_seg_labels(path: Path, preds: Sequence[PredCMB]) -> LabelMap:
    """Instance label map of a DICOM SEG, labels = detection ids (see the module docstring)."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
        vol = seg.get_volume(combine_segments=True, relabel=False, skip_overlap_checks=True)
    except (OSError, ValueError, RuntimeError, AttributeError) as e:
        raise EvaluationInputError(f"{path}: cannot read DICOM SEG: {e}") from e
    segments = np.asarray(vol.array)
    if segments.ndim != 3:
        raise EvaluationInputError(f"{path}: SEG volume is not 3D ({segments.shape})")
    instances = np.zeros(segments.shape, dtype=np.int32)
    n = 0
    for s in (int(v) for v in np.unique(segments) if v > 0):
        comps = np.asarray(cc3d.connected_components(segments == s, connectivity=26))
        for c in range(1, int(comps.max()) + 1):
            n += 1
            instances[comps == c] = n
    affine = np.asarray(vol.affine, dtype=np.float64)
    raw = LabelMap(array=instances, affine=affine)
    coms = centres_of_mass(raw, list(range(1, n + 1)))
    points = [TruthCMB(coms[k], label=k) for k in sorted(coms)]
    m = match_case(points, list(preds), MatchRule())
    new_id = {points[p.truth_index].label: preds[p.pred_index].id for p in m.pairs}
    base = max((p.id for p in preds), default=0) + 1
    lut = np.zeros(n + 1, dtype=np.int32)
    for k in range(1, n + 1):
        lut[k] = new_id.get(k, base + k)
    return LabelMap(array=lut[instances], affine=affine)
