"""A brain-centred frame from the parcellation, and the lobe of a lobar candidate.

The SynthSeg labels have one cortex label per hemisphere, no lobes, so lobes
are derived from geometry, with landmarks that the parcellation gives
reliably, and left undecided (``None``) near the approximate boundaries.

**Frame.**  Origin O = midpoint of the two thalamic centroids.  Lateral axis
``e_u`` = right thalamus -> left thalamus centroid (patient left positive).
Superior axis ``e_w`` = patient +S (LPS z) made orthogonal to ``e_u``;
posterior axis ``e_v = e_w x e_u``.  A point has frame coordinates
(u, v, w) in mm.  The frame follows head roll and yaw; pitch is taken from the
patient axes (DICOM LPS is anatomical, and the rules have margins).

**Landmarks.**  ``v_front`` / ``v_back``: most anterior / posterior brain
voxel (cerebrum labels); ``v_amygdala``: mean v of the amygdalae; the
pulvinar points (most posterior 10 % of each thalamus).

**Lobes** (only for candidates whose MARS category is lobar), first match:

1. hippocampus or amygdala -> temporal;
2. within ``insula_putamen_mm`` (15) of the ipsilateral putamen and lateral
   to it -> insula;
3. v >= v_occ + m, with v_occ = v_back - 0.2 (v_back - v_front) (the
   parieto-occipital sulcus lies ~20 % of the brain length from the
   occipital pole) -> occipital;
4. w <= -m (below the thalamic plane, roughly the Sylvian fissure) and
   v >= v_amygdala - 10 -> temporal;
5. w <= -m and v <= v_amygdala - 35 -> frontal (orbital);
6. v <= v_central - m, with the central sulcus approximated by the tilted
   plane v_central = 0.3 w (it runs from just behind the thalamic plane
   laterally to ~20 mm further back at the vertex) -> frontal;
7. v >= v_central + m, w >= m, v <= v_occ - m -> parietal;
8. otherwise ``None`` (within the margin m = ``lobe_margin_mm``, 6 mm, of a
   boundary).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model.location.labels import (
    HIPPOCAMPUS_AMYGDALA,
    PUTAMEN,
    THALAMUS,
)
from model.types import Volume

LOBES = ("frontal", "parietal", "temporal", "occipital", "insula")
CEREBRUM = (2, 3, 41, 42)

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True)
class BrainFrame:
    origin: Vector
    e_u: Vector  # patient left
    e_v: Vector  # posterior
    e_w: Vector  # superior
    v_front: float
    v_back: float
    v_amygdala: float
    pulvinar: dict[str, Vector]  # LPS, per side
    centroids: dict[int, Vector]  # LPS centroid of each label present

    def coords(self, point_lps: npt.ArrayLike) -> Vector:
        """(u, v, w) in mm of an LPS point."""
        d = np.asarray(point_lps, dtype=np.float64) - self.origin
        return np.array([d @ self.e_u, d @ self.e_v, d @ self.e_w])

    def from_pulvinar(self, point_lps: npt.ArrayLike) -> tuple[float, float]:
        """(behind, above) in mm: a point relative to the pulvinar of its own side."""
        u, v, w = self.coords(point_lps)
        _, pv, pw = self.coords(self.pulvinar["left" if u > 0 else "right"])
        return float(v - pv), float(w - pw)

    @property
    def pineal(self) -> Vector:
        """Expected pineal position: 5 mm behind the midpoint of the pulvinars."""
        mid = (self.pulvinar["left"] + self.pulvinar["right"]) / 2.0
        return mid + 5.0 * self.e_v

    def mirror(self, point_lps: npt.ArrayLike, left: int, right: int) -> Vector | None:
        """Reflection of a point across the plane bisecting the centroids of a label pair."""
        if left not in self.centroids or right not in self.centroids:
            return None
        cl, cr = self.centroids[left], self.centroids[right]
        n = cl - cr
        norm = float(np.linalg.norm(n))
        if norm < 1e-6:
            return None
        n /= norm
        mid = (cl + cr) / 2.0
        p = np.asarray(point_lps, dtype=np.float64)
        return p - 2.0 * float((p - mid) @ n) * n


def _voxels_lps(labels: Volume, mask: npt.NDArray[np.bool_]) -> Vector:
    return labels.index_to_lps(np.argwhere(mask))


def brain_frame(labels: Volume) -> BrainFrame | None:
    """The frame of a parcellation; ``None`` when a landmark is missing (no thalamus)."""
    arr = np.rint(labels.array).astype(np.int32)
    present = {int(v) for v in np.unique(arr)}
    needed = set(THALAMUS.values())
    if not needed <= present:
        return None
    centroids: dict[int, Vector] = {}
    for lab in present - {0}:
        centroids[lab] = _voxels_lps(labels, arr == lab).mean(axis=0)
    tl, tr = centroids[THALAMUS["left"]], centroids[THALAMUS["right"]]
    origin = (tl + tr) / 2.0
    e_u = tl - tr
    if np.linalg.norm(e_u) < 1e-6:
        return None
    e_u /= np.linalg.norm(e_u)
    s = np.array([0.0, 0.0, 1.0])
    e_w = s - (s @ e_u) * e_u
    e_w /= np.linalg.norm(e_w)
    e_v = np.cross(e_w, e_u)
    # Anterior/posterior extent of the cerebrum (subsampled: only extremes matter).
    sub = np.isin(arr[::2, ::2, ::2], CEREBRUM)
    idx = np.argwhere(sub) * 2
    if idx.size == 0:
        return None
    v_all = (labels.index_to_lps(idx) - origin) @ e_v
    amyg = [centroids[a] for a in (18, 54) if a in centroids]
    v_amyg = float(np.mean([(a - origin) @ e_v for a in amyg])) if amyg else 0.0
    pulvinar: dict[str, Vector] = {}
    for side, lab in THALAMUS.items():
        pts = _voxels_lps(labels, arr == lab)
        v = (pts - origin) @ e_v
        pulvinar[side] = pts[v >= np.quantile(v, 0.9)].mean(axis=0)
    return BrainFrame(
        origin=origin,
        e_u=e_u,
        e_v=e_v,
        e_w=e_w,
        v_front=float(v_all.min()),
        v_back=float(v_all.max()),
        v_amygdala=v_amyg,
        pulvinar=pulvinar,
        centroids=centroids,
    )


def lobe_of(
    point_lps: npt.ArrayLike,
    region_label: int,
    hemisphere: str | None,
    frame: BrainFrame,
    distance_putamen_mm: float,
    *,
    margin_mm: float = 6.0,
    insula_putamen_mm: float = 15.0,
    occipital_fraction: float = 0.2,
) -> str | None:
    """The lobe of a lobar candidate, or ``None`` where it cannot be told reliably."""
    if region_label in HIPPOCAMPUS_AMYGDALA:
        return "temporal"
    u, v, w = frame.coords(point_lps)
    m = margin_mm
    if distance_putamen_mm <= insula_putamen_mm and hemisphere in PUTAMEN:
        put = frame.centroids.get(PUTAMEN[hemisphere])
        if put is not None and abs(u) > abs(frame.coords(put)[0]):
            return "insula"
    v_occ = frame.v_back - occipital_fraction * (frame.v_back - frame.v_front)
    if v >= v_occ + m:
        return "occipital"
    if w <= -m:
        if frame.v_amygdala - 10.0 <= v <= v_occ - m:
            return "temporal"
        if v <= frame.v_amygdala - 35.0:
            return "frontal"
        return None
    v_central = 0.3 * w
    if v <= v_central - m:
        return "frontal"
    if v >= v_central + m and w >= m and v <= v_occ - m:
        return "parietal"
    return None
