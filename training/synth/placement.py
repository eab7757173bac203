"""Where lesions go: microbleed sites by MARS category and pattern, lobes, landmarks.

Everything here works in the deformed subject's 1 mm grid (index space) and
returns LPS mm of that grid (before the head pose).  A microbleed is placed only
where the whole sphere of its radius (+0.5 mm) is brain parenchyma, so that its
stated region is the tissue it sits in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from training.synth.anatomy import (
    MARS_DEEP,
    MARS_INFRA,
    MARS_LOBAR,
    PARENCHYMA,
    label_name,
)
from training.synth.params import MARS_PROPORTIONS


@dataclass(frozen=True)
class Site:
    index: tuple[float, float, float]  # continuous (k, j, i) in the subject grid
    lps: tuple[float, float, float]  # subject LPS mm
    region_label: int
    region: str
    mars: str
    lobe: str | None
    radius_mm: float = 0.0  # the lesion radius this site was checked for


class Anatomy:
    """The deformed subject with the lookups that placement needs (computed lazily)."""

    def __init__(
        self,
        labels: npt.NDArray[np.int16],
        mars: npt.NDArray[np.int8],
        affine: npt.NDArray[np.float64],
    ) -> None:
        self.labels = labels
        self.mars = mars
        self.affine = affine
        self.parenchyma = np.isin(labels, PARENCHYMA)
        # Bounding box from axis projections (argwhere over millions of voxels is slow).
        lo_hi = []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            nz = np.flatnonzero(self.parenchyma.any(axis=other))
            lo_hi.append((nz[0], nz[-1]))
        corners = np.array(
            [[lo_hi[0][0], lo_hi[1][0], lo_hi[2][0]], [lo_hi[0][1], lo_hi[1][1], lo_hi[2][1]]]
        )
        lps = self.to_lps(corners)
        self.brain_lo, self.brain_hi = lps.min(0), lps.max(0)
        coarse = np.argwhere(self.parenchyma[::3, ::3, ::3]) * 3
        self.centre = self.to_lps(coarse.mean(0))
        self._centroids: dict[tuple[int, ...], npt.NDArray[np.float64]] = {}
        # Per-label voxel counts and index sums: any centroid in O(1) afterwards.
        flat = labels.ravel().astype(np.int64)
        n = int(flat.max()) + 1
        self._count = np.bincount(flat, minlength=n).astype(np.float64)
        idx = np.indices(labels.shape).reshape(3, -1)
        self._sums = np.stack([np.bincount(flat, weights=idx[a], minlength=n) for a in range(3)], 1)

    def to_lps(self, index: npt.ArrayLike) -> npt.NDArray[np.float64]:
        idx = np.asarray(index, dtype=np.float64)
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def to_index(self, lps: npt.ArrayLike) -> npt.NDArray[np.float64]:
        inv = np.linalg.inv(self.affine)
        return np.asarray(lps, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]

    def label_at(self, lps: npt.ArrayLike) -> int:
        idx = np.rint(self.to_index(lps)).astype(int)
        if np.any(idx < 0) or np.any(idx >= self.labels.shape):
            return 0
        return int(self.labels[tuple(idx)])

    def centroid(self, labels: tuple[int, ...]) -> npt.NDArray[np.float64] | None:
        sel = [lab for lab in labels if lab < len(self._count)]
        count = float(self._count[sel].sum()) if sel else 0.0
        if count == 0:
            return None
        return self.to_lps(self._sums[sel].sum(0) / count)

    def lobe(self, lps: npt.NDArray[np.float64], label: int) -> str | None:
        """Approximate lobe of a lobar site from its position (no lobar parcellation exists)."""
        if label in (17, 18, 53, 54):
            return "temporal"
        left = lps[0] > self.centre[0]
        putamen = self.centroid((12,) if left else (51,))
        thalamus = self.centroid((10, 49))
        if putamen is None or thalamus is None:
            return None
        # LPS: x+ left, y+ posterior, z+ superior.
        u_ap = (lps[1] - self.brain_lo[1]) / max(self.brain_hi[1] - self.brain_lo[1], 1.0)
        if (
            abs(lps[0] - putamen[0]) < 22
            and abs(lps[1] - putamen[1]) < 14
            and abs(lps[2] - putamen[2]) < 14
        ):
            return "insula"
        if u_ap > 0.8:
            return "occipital"
        if lps[2] < thalamus[2] - 6 and 0.15 < u_ap <= 0.8:
            return "temporal"
        if lps[1] < thalamus[1]:
            return "frontal"
        return "parietal"

    def site(self, index: npt.NDArray[np.float64]) -> Site:
        vox = tuple(int(v) for v in np.rint(index))
        label = int(self.labels[vox])
        category = {MARS_LOBAR: "lobar", MARS_DEEP: "deep", MARS_INFRA: "infratentorial"}[
            int(self.mars[vox])
        ]
        lps = self.to_lps(index)
        lobe = self.lobe(lps, label) if category == "lobar" else None
        return Site(
            index=(float(index[0]), float(index[1]), float(index[2])),
            lps=(float(lps[0]), float(lps[1]), float(lps[2])),
            region_label=label,
            region=label_name(label),
            mars=category,
            lobe=lobe,
        )

    def fits(self, index: npt.NDArray[np.float64], radius_mm: float) -> bool:
        """Whole sphere (radius + 0.5 mm) in parenchyma, centre voxel inside the grid."""
        r = int(np.ceil(radius_mm + 0.5))
        c = np.rint(index).astype(int)
        if np.any(c - r < 0) or np.any(c + r >= self.labels.shape):
            return False
        block = self.parenchyma[
            c[0] - r : c[0] + r + 1, c[1] - r : c[1] + r + 1, c[2] - r : c[2] + r + 1
        ]
        g = np.indices(block.shape) - r
        ball = np.einsum("i...,i...->...", g, g) <= (radius_mm + 0.5) ** 2
        return bool(np.all(block[ball]))


def place_microbleeds(
    anatomy: Anatomy,
    rng: np.random.Generator,
    n: int,
    pattern: str,
    radii_mm: list[float],
) -> list[Site]:
    """Choose ``n`` sites following the pattern's MARS proportions (clustered for CAA)."""
    if n == 0:
        return []
    props = np.array(MARS_PROPORTIONS[pattern])
    cats = rng.choice([MARS_LOBAR, MARS_DEEP, MARS_INFRA], size=n, p=props / props.sum())
    pools = {c: np.argwhere(anatomy.mars == c) for c in (MARS_LOBAR, MARS_DEEP, MARS_INFRA)}
    cluster_centres: list[npt.NDArray[np.float64]] = []
    if pattern == "lobar_cluster":
        # Cerebral amyloid angiopathy: cortico-subcortical, posterior predominance, 1-2 foci.
        lobar = pools[MARS_LOBAR]
        posterior = lobar[lobar[:, 0] <= np.percentile(lobar[:, 0], 55)] if len(lobar) else lobar
        for _ in range(int(rng.integers(1, 3))):
            cluster_centres.append(posterior[rng.integers(len(posterior))].astype(np.float64))
    sites: list[Site] = []
    for cat, radius in zip(cats, radii_mm, strict=True):
        pool = pools[int(cat)]
        if len(pool) == 0:
            continue
        for _attempt in range(200):
            if cluster_centres:
                c = cluster_centres[int(rng.integers(len(cluster_centres)))]
                near = pool[np.sum((pool - c) ** 2, axis=1) < 30.0**2]
                cand = near if len(near) else pool
            else:
                cand = pool
            index = cand[rng.integers(len(cand))] + rng.uniform(-0.45, 0.45, 3)
            if anatomy.fits(index, radius) and all(
                np.linalg.norm(np.subtract(index, s.index)) > 2.5 * radius + 2.0 for s in sites
            ):
                sites.append(dataclasses.replace(anatomy.site(index), radius_mm=float(radius)))
                break
    return sites
