"""Where a candidate is: neighbourhood-dominant label, distances, MARS category.

**Region.**  A microbleed's blooming often straddles two labels (cortex and
the CSF of a sulcus, white matter and a ventricle), and the parcellation's
boundaries are uncertain by a voxel or two, so the label at the centre voxel
is a poor answer.  The region is decided from the labels inside a sphere of
radius ``max(min_radius_mm, diameter / 2 + margin_mm)`` around the centre:

* if at least ``min_parenchyma_fraction`` (30 %) of it is brain tissue, the
  region is the most frequent *tissue* label (so a juxtacortical bleed
  bordering a sulcus is cortex, not CSF);
* otherwise it is the most frequent label overall: a fluid label (the
  candidate sits in CSF or a ventricle) or background (outside the brain).

**Distances** (mm, from the centre, to the nearest voxel of the label set,
measured in LPS on the parcellation's grid; ``inf`` beyond ``search_mm``, 20 mm): to the
cortex (3/42), to the lateral ventricles (4/5/43/44), to the deep nuclei, to
the ipsilateral putamen, and to the white matter of the other hemisphere.

**MARS.**  From the label table (:mod:`model.location.labels`), except for
cerebral white matter, which MARS splits: *deep* (periventricular within
``periventricular_mm`` of a lateral ventricle; internal/external capsule
within ``capsule_mm`` of a deep nucleus; corpus callosum within
``callosal_mm`` of the other hemisphere's white matter) and otherwise
*lobar* (subcortical / juxtacortical white matter).  A candidate kept in a
fluid region (the soft CSF rule on SWI) takes the category of the most
frequent tissue label around it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model.location import labels as lt
from model.location.labels import TissueKind
from model.types import MarsCategory, Volume


@dataclass(frozen=True)
class RegionParams:
    margin_mm: float = 2.0
    min_radius_mm: float = 2.0
    min_parenchyma_fraction: float = 0.3
    periventricular_mm: float = 10.0
    capsule_mm: float = 6.0
    callosal_mm: float = 3.0
    search_mm: float = 20.0


@dataclass(frozen=True)
class Neighbourhood:
    """Label fractions in the sphere around a candidate."""

    counts: dict[int, int]

    @property
    def total(self) -> int:
        return max(1, sum(self.counts.values()))

    def fraction(self, labels: frozenset[int] | set[int]) -> float:
        return sum(c for lab, c in self.counts.items() if lab in labels) / self.total

    @property
    def parenchyma_fraction(self) -> float:
        return sum(c for lab, c in self.counts.items() if lt.info(lab).is_parenchyma) / self.total

    @property
    def fluid_fraction(self) -> float:
        return self.fraction(lt.FLUID)

    @property
    def background_fraction(self) -> float:
        return (
            sum(c for lab, c in self.counts.items() if lab not in lt.BY_ID or lab == 0) / self.total
        )

    def dominant(self, *, tissue_only: bool = False) -> int:
        items = [
            (c, lab)
            for lab, c in self.counts.items()
            if not tissue_only or lt.info(lab).is_parenchyma
        ]
        if not items:
            return 0
        return max(items)[1]


@dataclass(frozen=True)
class Patch:
    """The labels around a point and each voxel's distance to it (one crop, many queries)."""

    values: npt.NDArray[np.int64]
    distances_mm: npt.NDArray[np.float64]
    half_diagonal_mm: float = 0.0  # of one voxel

    def neighbourhood(self, radius_mm: float) -> Neighbourhood:
        inside = self.values[self.distances_mm <= radius_mm]
        if inside.size == 0:
            i = int(np.argmin(self.distances_mm))
            if self.distances_mm[i] > radius_mm + self.half_diagonal_mm:
                return Neighbourhood({0: 1})  # outside the label map
            inside = self.values[[i]]  # radius smaller than the voxel: the nearest voxel
        return Neighbourhood(dict(Counter(inside.tolist())))

    def distance_to(self, label_set: frozenset[int] | set[int]) -> float:
        """Distance (mm) to the nearest ``label_set`` voxel centre (``inf``: none in the patch)."""
        hit = self.distances_mm[np.isin(self.values, list(label_set))]
        return float(hit.min()) if hit.size else float("inf")


def patch_around(labels: Volume, center_lps: npt.ArrayLike, radius_mm: float) -> Patch:
    """Labels within ``radius_mm`` of a point (LPS), with their distances."""
    centre = np.asarray(center_lps, dtype=np.float64)
    c_idx = labels.lps_to_index(centre)
    spacing = np.asarray(labels.spacing)
    half = np.ceil(radius_mm / spacing).astype(int) + 1
    shape = np.asarray(labels.shape)
    lo = np.clip(np.floor(c_idx).astype(int) - half, 0, shape - 1)
    hi = np.clip(np.ceil(c_idx).astype(int) + half, 0, shape - 1)
    axes = [np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    d = np.linalg.norm(labels.index_to_lps(grid) - centre, axis=1)
    crop = labels.array[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
    values = np.rint(crop).astype(np.int64).reshape(-1)
    half_diag = float(np.linalg.norm(spacing)) / 2.0
    keep = d <= radius_mm
    if not keep.any():
        if d.min() > radius_mm + half_diag:
            # the point lies outside the label map: nothing but background around it
            return Patch(np.zeros(1, np.int64), np.full(1, np.inf), half_diag)
        keep = d == d.min()  # radius smaller than the voxel: the nearest voxel
    return Patch(values[keep], d[keep], half_diag)


def neighbourhood(labels: Volume, center_lps: npt.ArrayLike, radius_mm: float) -> Neighbourhood:
    """Label counts of the voxels of ``labels`` whose centres lie within ``radius_mm``."""
    return patch_around(labels, center_lps, radius_mm).neighbourhood(radius_mm)


def distance_to(
    labels: Volume, center_lps: npt.ArrayLike, label_set: frozenset[int] | set[int], max_mm: float
) -> float:
    """Distance (mm) from a point to the nearest ``label_set`` voxel; ``inf`` beyond ``max_mm``."""
    return patch_around(labels, center_lps, max_mm).distance_to(label_set)


@dataclass(frozen=True)
class Region:
    label: int
    name: str
    neighbourhood: Neighbourhood
    hemisphere: str | None
    distance_cortex_mm: float
    distance_ventricle_mm: float
    distance_deep_nuclei_mm: float
    distance_putamen_mm: float
    mars: MarsCategory | None
    wm_subclass: (
        str | None
    )  # periventricular / capsular / callosal / juxtacortical (cerebral WM only)

    @property
    def kind(self) -> TissueKind:
        return lt.info(self.label).kind


def region_of(
    labels: Volume,
    center_lps: npt.ArrayLike,
    diameter_mm: float,
    params: RegionParams | None = None,
    side_of_midline: str | None = None,
) -> Region:
    """Region, distances and MARS category of a candidate; see the module docstring."""
    p = params or RegionParams()
    radius = max(p.min_radius_mm, diameter_mm / 2.0 + p.margin_mm)
    patch = patch_around(labels, center_lps, max(radius, p.search_mm))
    nb = patch.neighbourhood(radius)
    if nb.parenchyma_fraction >= p.min_parenchyma_fraction:
        label = nb.dominant(tissue_only=True)
    else:
        label = nb.dominant()
    info = lt.info(label)
    hemisphere = info.hemisphere or side_of_midline
    d_ctx = patch.distance_to(lt.CORTEX)
    d_ven = patch.distance_to(lt.LATERAL_VENTRICLES)
    d_deep = patch.distance_to(lt.DEEP_NUCLEI)
    putamen = {lt.PUTAMEN[hemisphere]} if hemisphere in lt.PUTAMEN else set(lt.PUTAMEN.values())
    d_put = patch.distance_to(putamen)
    mars = info.mars
    wm_subclass = None
    if info.kind is TissueKind.CEREBRAL_WM:
        other = {41} if label == 2 else {2}
        if d_ven <= p.periventricular_mm:
            wm_subclass = "periventricular"
        elif d_deep <= p.capsule_mm:
            wm_subclass = "capsular"
        elif patch.distance_to(other) <= p.callosal_mm:
            wm_subclass = "callosal"
        else:
            wm_subclass = "juxtacortical"
        mars = MarsCategory.LOBAR if wm_subclass == "juxtacortical" else MarsCategory.DEEP
    elif info.is_fluid:
        tissue = nb.dominant(tissue_only=True)
        if tissue:
            mars = (
                lt.info(tissue).mars
                if lt.info(tissue).kind is not TissueKind.CEREBRAL_WM
                else (MarsCategory.DEEP if d_ven <= p.periventricular_mm else MarsCategory.LOBAR)
            )
    return Region(
        label=label,
        name=lt.name(label),
        neighbourhood=nb,
        hemisphere=hemisphere,
        distance_cortex_mm=d_ctx,
        distance_ventricle_mm=d_ven,
        distance_deep_nuclei_mm=d_deep,
        distance_putamen_mm=d_put,
        mars=mars,
        wm_subclass=wm_subclass,
    )
