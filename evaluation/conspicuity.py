"""How visible a true CMB is on its image: local contrast-to-noise ratio and Rose's number.

A reference standard may label lesions a reader can hardly see (the synthetic
engine labels signal loss before noise; a rater may mark a faint dot on a
neighbouring slice's evidence).  Recall per visibility bin tells a miss of a
subtle lesion from a miss of an obvious one.  Per true CMB, on the truth's own
image grid (slice axis first):

* the ring: the voxels 2 to :data:`RING_OUTER` in-plane steps outside its
  truth mask, on the slices the mask touches, that belong to no lesion (what a
  reader compares the spot with on the slice; one step of partial-volume rim
  is left out);
* ``cnr = (mean(ring) - mean(mask)) / sd(ring)``: how many of the
  surroundings' standard deviations (noise and anatomy) the spot is darker by;
* ``rose = cnr * sqrt(largest in-plane section in voxels)``: Rose's criterion
  for a uniform object in white noise (a reader needs about 3-5 to see it).

Written by hand: it is a few lines of SciPy morphology, and no imaging library
offers a per-lesion conspicuity measure of this form.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

#: Outer edge of the ring, in in-plane steps from the mask.
RING_OUTER = 4
#: Lower bin edges of the local CNR (the evaluation's ``local_cnr`` stratum) and of Rose's number.
CNR_BINS = (0.0, 1.0, 2.0, 3.0, 5.0)
ROSE_BINS = (0.0, 3.0, 5.0, 10.0, 20.0)
#: A ring of fewer voxels gives no CNR (a lesion at the volume's edge or among others).
MIN_RING_VOXELS = 8

_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[1] = ndi.generate_binary_structure(2, 1)


def measure_lesion(
    image: npt.NDArray[Any], labels: npt.NDArray[Any], label: int
) -> dict[str, float | int | None]:
    """``n_voxels``, ``section_voxels``, ``inside``, ``ring``, ``cnr`` and ``rose`` of the
    lesion labelled ``label``; ``cnr`` and ``rose`` are None when the mask is empty or its
    ring holds fewer than :data:`MIN_RING_VOXELS` voxels.  ``image`` and ``labels`` share
    one grid."""
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in shape")
    where = np.nonzero(labels == label)
    out: dict[str, float | int | None] = {"n_voxels": len(where[0]), "cnr": None, "rose": None}
    if not len(where[0]):
        return out
    # a box around the lesion, wide enough for the ring: the morphology stays small
    lo = [int(w.min()) for w in where]
    hi = [int(w.max()) + 1 for w in where]
    pad = (0, RING_OUTER + 1, RING_OUTER + 1)
    box = tuple(
        slice(max(a - p, 0), min(b + p, n))
        for a, b, p, n in zip(lo, hi, pad, labels.shape, strict=True)
    )
    lab = labels[box]
    mask = lab == label
    near = ndi.binary_dilation(mask, _IN_PLANE, iterations=1)
    far = ndi.binary_dilation(mask, _IN_PLANE, iterations=RING_OUTER)
    ring = far & ~near & (lab == 0)
    section = int(mask.sum(axis=(1, 2)).max())
    out["section_voxels"] = section
    if ring.sum() < MIN_RING_VOXELS:
        return out
    values = image[box][ring].astype(np.float64)
    inside = float(image[box][mask].astype(np.float64).mean())
    mean, spread = float(values.mean()), float(values.std())
    out |= {"inside": round(inside, 3), "ring": round(mean, 3)}
    if spread > 0:
        cnr = (mean - inside) / spread
        out |= {"cnr": round(cnr, 3), "rose": round(cnr * float(np.sqrt(section)), 3)}
    return out
