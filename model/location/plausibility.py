"""Is there a brain in this parcellation?  A guard before the rules act on it.

The parcellation network has only ever seen heads: given a phantom (a sphere,
a bottle of water) it still draws a brain into it, and the rules would then
reject candidates by made-up anatomy.  The thalami are the check: every head
the rules were measured on has both (held-out and selection sets, 90 scans:
the smallest thalamus 4.75 ml; a real GE head with 9 mm slices: 7.1 and
6.5 ml), while the two phantoms of ``../shared/data/real_dicom`` gave 0 / 0
and 1.8 / 0 ml (docs/location-filter.md).  The lobe frame needs them too.  When the check
fails the pipeline keeps every candidate, unlocated, and says why: a scan
that is not a whole brain loses nothing to the filter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.types import Volume

LEFT_THALAMUS, RIGHT_THALAMUS = 10, 49
#: Each thalamus must have at least this volume (ml) for the anatomy to be believed.
MIN_THALAMUS_ML = 2.5


@dataclass(frozen=True)
class Plausibility:
    plausible: bool
    thalamus_ml: tuple[float, float]  # left, right
    reason: str


def check_anatomy(parcellation: Volume, min_thalamus_ml: float = MIN_THALAMUS_ML) -> Plausibility:
    """Whether ``parcellation`` looks like a brain (both thalami present, see the module doc)."""
    # label ids are whole numbers in the float array (both parcellation methods
    # write them so): compare in place, no integer copy of a whole-head volume
    labels = parcellation.array
    ml = parcellation.voxel_volume_mm3 / 1000.0
    left = float(np.count_nonzero(labels == LEFT_THALAMUS)) * ml
    right = float(np.count_nonzero(labels == RIGHT_THALAMUS)) * ml
    plausible = min(left, right) >= min_thalamus_ml
    reason = (
        "both thalami found"
        if plausible
        else f"no brain recognised: thalami {left:.1f} / {right:.1f} ml "
        f"(each needs >= {min_thalamus_ml:g} ml); not a whole brain, or not a head"
    )
    return Plausibility(plausible, (round(left, 2), round(right, 2)), reason)
