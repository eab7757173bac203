"""Procedural veins: medullary, cortical, deep veins and dural sinuses.

The label maps carry almost no vessels, yet veins cut across on a slice are the
main microbleed mimic.  Veins are polylines (subject LPS mm) with a radius,
built from anatomical landmarks:

* medullary veins: from the lateral-ventricle wall radially outwards through the
  white matter (0.2-0.5 mm), many of them; those running along B0 are cut
  across on axial slices and look like dots;
* cortical veins: along sulcal CSF, rising towards the vertex (0.6-2 mm);
* deep veins: internal cerebral veins on the roof of the third ventricle, the
  basal veins of Rosenthal around the midbrain, the vein of Galen, the straight
  sinus; dural sinuses: superior sagittal and transverse sinuses (2-5 mm).

Rendering (on the subject's 1 mm grid, before the acquisition): deoxygenated
blood is paramagnetic (``dchi`` ~0.45 ppm at Hct 0.4, Y 0.6).  Inside an
infinite cylinder at angle ``theta`` to B0 the field offset is
``dchi/6 (3 cos^2 theta - 1) B0``; blood T2* is short (about 45 ms at 1.5 T,
16 ms at 3 T, 5 ms at 7 T).  Outside, the field ``dchi/2 sin^2 theta (a/rho)^2
cos 2psi B0`` dephases the tissue; its angular average is
``J0(x)``, ``x = K/2 sin^2 theta (a/rho)^2`` and is used as ``exp(-x^2/4)``
(same small-x behaviour, no oscillation).  Partial volume of thin veins uses a
Gaussian-smoothed disk occupancy.  For SWI the negative-phase mask of the
intravascular signal is folded into the vein's magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from training.synth.anatomy import CORTEX, LATERAL_VENTRICLES, WM
from training.synth.dipole import dephasing_constant, phase_mask
from training.synth.placement import Anatomy


@dataclass(frozen=True)
class Vein:
    kind: str  # medullary, cortical, internal_cerebral, basal, galen, straight_sinus, ...
    points: npt.NDArray[np.float64]  # (n, 3) subject LPS mm
    radius_mm: float

    def record(self, to_scanner: npt.NDArray[np.float64]) -> dict[str, object]:
        mid = self.points[len(self.points) // 2]
        c = to_scanner[:3, :3] @ mid + to_scanner[:3, 3]
        length = float(np.sum(np.linalg.norm(np.diff(self.points, axis=0), axis=1)))
        return {
            "kind": "vein",
            "vessel": self.kind,
            "center_lps_mm": [round(float(v), 2) for v in c],
            "diameter_mm": round(2 * self.radius_mm, 2),
            "length_mm": round(length, 1),
        }


def _walk(
    anatomy: Anatomy,
    rng: np.random.Generator,
    start: npt.NDArray[np.float64],
    direction: npt.NDArray[np.float64],
    length_mm: float,
    allowed: npt.NDArray[np.bool_],
    step_mm: float = 2.0,
    wiggle: float = 0.15,
    bias: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.float64]:
    pts = [start]
    d = direction / (np.linalg.norm(direction) + 1e-9)
    for _ in range(int(length_mm / step_mm)):
        best = None
        for _try in range(6):
            cand = d + wiggle * rng.standard_normal(3)
            if bias is not None:
                cand = cand + bias
            cand /= np.linalg.norm(cand) + 1e-9
            nxt = pts[-1] + step_mm * cand
            idx = np.rint(anatomy.to_index(nxt)).astype(int)
            if np.all(idx >= 0) and np.all(idx < allowed.shape) and allowed[tuple(idx)]:
                best = (nxt, cand)
                break
        if best is None:
            break
        pts.append(best[0])
        d = best[1]
    return np.array(pts)


def medullary_veins(anatomy: Anatomy, rng: np.random.Generator, n: int) -> list[Vein]:
    labels = anatomy.labels
    wm = np.isin(labels, WM)
    vent = np.isin(labels, LATERAL_VENTRICLES)
    # White-matter voxels touching a lateral ventricle (shifted masks, no distance transform).
    touch = np.zeros_like(vent)
    for axis in range(3):
        for shift in (-2, 2):
            touch |= np.roll(vent, shift, axis=axis)
    seeds = np.argwhere(wm & touch)
    # Medullary veins cross the white matter and end in the cortex (cortical veins).
    wm_or_cortex = wm | np.isin(labels, CORTEX)
    anywhere = np.argwhere(wm)[::7]
    out: list[Vein] = []
    if len(seeds) == 0 or len(anywhere) == 0:
        return out
    centres = {side: anatomy.centroid((side,)) for side in LATERAL_VENTRICLES}
    for _ in range(n):
        pool = seeds if rng.random() < 0.5 else anywhere
        s = anatomy.to_lps(pool[rng.integers(len(pool))])
        left = s[0] > anatomy.centre[0]
        c = centres[4 if left else 43]
        if c is None:
            continue
        d = s - c
        d[2] *= rng.uniform(0.5, 2.5)  # many run steeply: cut across on axial slices
        pts = _walk(anatomy, rng, s, d, rng.uniform(20, 60), wm_or_cortex, step_mm=2.5, wiggle=0.12)
        if len(pts) >= 3:
            out.append(Vein("medullary", pts, float(rng.uniform(0.2, 0.5))))
    return out


def cortical_veins(anatomy: Anatomy, rng: np.random.Generator, n: int) -> list[Vein]:
    labels = anatomy.labels
    csf = labels == 24
    cortex = np.isin(labels, CORTEX)
    near = np.zeros_like(cortex)
    for axis in range(3):
        for shift in (-1, 1):
            near |= np.roll(cortex, shift, axis=axis)
    sulcal = csf & near
    seeds = np.argwhere(sulcal)
    out: list[Vein] = []
    if len(seeds) == 0:
        return out
    up = np.array([0.0, 0.0, 1.0])
    for _ in range(n):
        s = anatomy.to_lps(seeds[rng.integers(len(seeds))])
        if s[2] < anatomy.centre[2] - 20:
            continue
        d = rng.standard_normal(3)
        pts = _walk(
            anatomy,
            rng,
            s,
            d,
            rng.uniform(15, 60),
            csf | near,
            step_mm=2.0,
            wiggle=0.3,
            bias=0.3 * up,
        )
        if len(pts) >= 4:
            out.append(Vein("cortical", pts, float(rng.uniform(0.5, 1.5))))
    return out


def _curve(points: list[npt.NDArray[np.float64]], n: int = 20) -> npt.NDArray[np.float64]:
    """Quadratic/linear interpolation through landmarks (smooth enough for 1 mm rendering)."""
    p = np.array(points)
    t = np.linspace(0, 1, len(p))
    tt = np.linspace(0, 1, n)
    return np.stack([np.interp(tt, t, p[:, a]) for a in range(3)], axis=1)


def deep_veins(anatomy: Anatomy, rng: np.random.Generator) -> list[Vein]:
    labels = anatomy.labels
    out: list[Vein] = []
    third = np.argwhere(labels == 14)
    if len(third) < 10:
        return out
    pts3 = anatomy.to_lps(third)
    mid_x = float(np.median(pts3[:, 0]))
    top = pts3[:, 2].max()
    ant, post = pts3[:, 1].min(), pts3[:, 1].max()
    # Internal cerebral veins: paired, 2 mm off midline on the roof of the third ventricle.
    galen = np.array([mid_x, post + 6.0, top + 4.0])
    for side in (-1, 1):
        icv = _curve(
            [
                np.array([mid_x + side * 2.0, ant + 2, top + 1.5]),
                np.array([mid_x + side * 2.0, post, top + 2.0]),
                galen,
            ]
        )
        out.append(Vein("internal_cerebral", icv, float(rng.uniform(0.9, 1.5))))
    brain = anatomy.parenchyma
    allp = np.argwhere(brain)
    lps = anatomy.to_lps(allp[:: max(1, len(allp) // 40000)])
    midline = lps[np.abs(lps[:, 0] - mid_x) < 3]
    back = lps[:, 1].max()
    # Torcula: back of the brain at the level of the tentorium (top of the cerebellum).
    cereb = np.argwhere(np.isin(labels, (8, 47)))
    cereb_top = anatomy.to_lps(cereb).max(axis=0)[2] if len(cereb) else galen[2] - 25
    torcula = np.array([mid_x, back + 3.0, cereb_top - 3.0])
    galen_end = galen + np.array([0, 8.0, 4.0])
    out.append(Vein("galen", _curve([galen, galen_end], 6), float(rng.uniform(1.8, 3.0))))
    out.append(
        Vein("straight_sinus", _curve([galen_end, torcula], 12), float(rng.uniform(2.0, 3.0)))
    )
    # Superior sagittal sinus: along the top of the midline, 3 mm outside the brain.
    if len(midline):
        arc = []
        c = anatomy.centre
        for ang in np.linspace(-np.pi / 2 + 0.2, np.pi / 2 + 0.6, 14):
            d = np.array([0.0, np.sin(ang), np.cos(ang)])
            proj = (midline - c) @ d
            arc.append(c + d * (proj.max() + 3.0) + np.array([mid_x - c[0], 0, 0]))
        arc.append(torcula)
        out.append(Vein("superior_sagittal_sinus", np.array(arc), float(rng.uniform(3.0, 4.5))))
    # Transverse sinuses: from the torcula laterally and forwards along the tentorium.
    for side in (-1, 1):
        lat = torcula + np.array([side * 35.0, -10.0, -5.0])
        lat2 = torcula + np.array([side * 50.0, -30.0, -15.0])
        out.append(
            Vein("transverse_sinus", _curve([torcula, lat, lat2], 14), float(rng.uniform(2.5, 4.0)))
        )
    # Basal veins of Rosenthal: from the ventral diencephalon around the midbrain to Galen.
    for side, lab in ((1, 28), (-1, 60)):
        vdc = anatomy.centroid((lab,))
        if vdc is None:
            continue
        start = vdc + np.array([0.0, -8.0, -4.0])
        around = vdc + np.array([side * 6.0, 8.0, 2.0])
        out.append(Vein("basal", _curve([start, around, galen]), float(rng.uniform(0.8, 1.3))))
    # Thalamostriate veins: along the caudothalamic groove to the foramen of Monro.
    for side, labs in ((1, (10, 11)), (-1, (49, 50))):
        tc = anatomy.centroid((labs[0],))
        cc = anatomy.centroid((labs[1],))
        if tc is None or cc is None:
            continue
        groove = (tc + cc) / 2 + np.array([0, 8.0, 6.0])
        monro = np.array([mid_x + side * 3.0, ant + 2, top + 1.5])
        out.append(
            Vein("thalamostriate", _curve([groove, monro], 10), float(rng.uniform(0.6, 1.0)))
        )
    return out


def _occupancy(
    rho: npt.NDArray[np.float64], radius: float | npt.NDArray[np.float64], sigma: float
) -> npt.NDArray[np.float64]:
    """Fraction of a 1 mm voxel covered by a cylinder of ``radius`` at distance ``rho``.

    Thick cylinders: a 1-voxel linear ramp at the wall; thin ones: the disk's
    area spread by a Gaussian of the voxel's width (so a 0.3 mm vein still darkens
    the voxels it crosses, in proportion to its cross-section).
    """
    occ = np.clip(radius - rho + 0.5, 0.0, 1.0)
    thin = radius * radius / (2 * sigma**2) * np.exp(-(rho**2) / (2 * sigma**2))
    return np.where(radius < 0.7, np.maximum(occ, np.minimum(1.0, thin)), occ)


def render_veins(
    shape: tuple[int, int, int],
    affine: npt.NDArray[np.float64],
    veins: list[Vein],
    *,
    b0_dir_subject: npt.NDArray[np.float64],
    field_strength_t: float,
    echo_time_ms: float,
    chi_ppm: float,
    phase_mask_power: int,
) -> npt.NDArray[np.float32]:
    """Multiplicative magnitude factor of all veins on a 1 mm grid."""
    factor = np.ones(shape, dtype=np.float32)
    inv = np.linalg.inv(affine)
    k_rad = dephasing_constant(field_strength_t, echo_time_ms, chi_ppm)
    t2s_blood_ms = 45.0 * (1.5 / field_strength_t) ** 1.5
    s_blood = float(np.exp(-echo_time_ms / t2s_blood_ms))
    sigma = 0.4
    a3, origin = affine[:3, :3], affine[:3, 3]
    cols = [a3[:, d] for d in range(3)]
    phase_power = phase_mask_power
    for vein in veins:
        a = vein.radius_mm
        pts = vein.points
        reach = 2.0 + a * max(1.0, np.sqrt(k_rad / 3.3))
        p0s, p1s = pts[:-1], pts[1:]
        lengths = np.linalg.norm(p1s - p0s, axis=1)
        keep = lengths > 1e-6
        p0s, p1s, lengths = p0s[keep], p1s[keep], lengths[keep]
        if len(p0s) == 0:
            continue
        axes = (p1s - p0s) / lengths[:, None]
        cos_all = np.abs(axes @ b0_dir_subject)
        i0 = p0s @ inv[:3, :3].T + inv[:3, 3]
        i1 = p1s @ inv[:3, :3].T + inv[:3, 3]
        los = np.maximum(np.floor(np.minimum(i0, i1) - reach).astype(int), 0)
        his = np.minimum(np.ceil(np.maximum(i0, i1) + reach).astype(int) + 1, shape)
        for s_i in range(len(p0s)):
            lo, hi = los[s_i], his[s_i]
            if np.any(hi <= lo):
                continue
            # Voxel centres relative to the segment start, by broadcasting (no meshgrid).
            rel = (
                (origin - p0s[s_i])
                + np.arange(lo[0], hi[0])[:, None, None, None] * cols[0]
                + np.arange(lo[1], hi[1])[None, :, None, None] * cols[1]
                + np.arange(lo[2], hi[2])[None, None, :, None] * cols[2]
            )
            along = rel @ axes[s_i]
            t = np.clip(along, 0.0, lengths[s_i])
            rho = np.sqrt(
                np.maximum(np.einsum("...k,...k->...", rel, rel) - 2 * t * along + t * t, 0.0)
            )
            cos_t = float(cos_all[s_i])
            sin2 = 1.0 - cos_t * cos_t
            # Dark cylinder = vessel plus its extravascular dephasing zone (where the
            # angular-averaged dephasing exp(-x^2/4) falls below 1/2: x > 1.67).
            r_dark = max(a, a * np.sqrt(k_rad * sin2 / (2.0 * 1.67)))
            occ_dark = _occupancy(rho, r_dark, sigma)
            occ_in = _occupancy(rho, a, sigma) * s_blood
            phase_in = -k_rad / 6.0 * (3.0 * cos_t * cos_t - 1.0)
            re = (1.0 - occ_dark) + occ_in * np.cos(phase_in)
            im = occ_in * np.sin(phase_in)
            mag = np.sqrt(re * re + im * im).astype(np.float32)
            if phase_power > 0:
                mag *= phase_mask(np.arctan2(im, re), phase_power)
            sl = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
            np.minimum(factor[sl], mag, out=factor[sl])
    return factor
