"""Hard negatives that look like microbleeds: calcifications, flow voids, air/bone, large bleeds.

All are ellipsoidal susceptibility objects rendered by the same sub-voxel model
as microbleeds (:mod:`training.synth.dipole`), so they bloom the same way;
what differs is the physics: calcifications are diamagnetic (negative chi, so
opposite phase, which SWI's phase mask treats differently), flow voids have no
susceptibility (pure signal loss), paranasal-sinus and mastoid air is
paramagnetic relative to tissue (+9.4 ppm) and dephases the brain next to it,
cavernomas and haemorrhages are larger than 10 mm.  None of them is labelled in
the truth mask; each is recorded in ``mimics``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from training.synth.anatomy import PALLIDUM, PARENCHYMA
from training.synth.dipole import SusceptibilityObject
from training.synth.placement import Anatomy


@dataclass(frozen=True)
class MimicObject:
    kind: str
    obj: SusceptibilityObject
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "center_lps_mm": [round(v, 3) for v in self.obj.center_lps],
            "diameter_mm": round(2 * self.obj.equivalent_radius_mm, 3),
            "chi_ppm": round(self.obj.chi_ppm, 4),
            **self.extra,
        }


def _rot(rng: np.random.Generator) -> tuple[tuple[float, ...], ...]:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return tuple(tuple(float(v) for v in row) for row in q)


def _obj(
    centre: npt.NDArray[np.float64],
    to_scanner: npt.NDArray[np.float64],
    axes: npt.ArrayLike,
    chi: float,
    interior: float,
    rng: np.random.Generator,
) -> SusceptibilityObject:
    c = to_scanner[:3, :3] @ centre + to_scanner[:3, 3]
    a = np.asarray(axes, dtype=np.float64)
    return SusceptibilityObject(
        center_lps=(float(c[0]), float(c[1]), float(c[2])),
        semi_axes_mm=(float(a[0]), float(a[1]), float(a[2])),
        rotation=_rot(rng),
        chi_ppm=float(chi),
        interior_signal=float(interior),
    )


def _pick(
    anatomy: Anatomy, rng: np.random.Generator, mask: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64] | None:
    pts = np.argwhere(mask)
    if len(pts) == 0:
        return None
    return anatomy.to_lps(pts[rng.integers(len(pts))])


def _mirror(
    anatomy: Anatomy, p: npt.NDArray[np.float64], labels: tuple[int, ...]
) -> npt.NDArray[np.float64] | None:
    """The nearest voxel of ``labels`` to the point mirrored across the midline."""
    q = p.copy()
    q[0] = 2 * anatomy.centre[0] - p[0]
    pts = np.argwhere(np.isin(anatomy.labels, labels))
    if len(pts) == 0:
        return None
    lps = anatomy.to_lps(pts)
    return np.asarray(lps[np.argmin(np.sum((lps - q) ** 2, axis=1))])


def make_mimics(
    anatomy: Anatomy,
    rng: np.random.Generator,
    kinds: tuple[str, ...],
    to_scanner: npt.NDArray[np.float64],
) -> list[MimicObject]:
    out: list[MimicObject] = []
    labels = anatomy.labels
    for kind in kinds:
        if kind == "pallidal_calcification":
            p = _pick(anatomy, rng, np.isin(labels, PALLIDUM))
            if p is None:
                continue
            pair = [p]
            if rng.random() < 0.6:
                other = _mirror(anatomy, p, PALLIDUM)
                if other is not None:
                    pair.append(other)
            r = rng.uniform(0.8, 2.5)
            chi = -rng.uniform(0.5, 2.0)
            for q in pair:
                out.append(
                    MimicObject(
                        kind,
                        _obj(
                            q,
                            to_scanner,
                            r * rng.uniform(0.7, 1.0, 3),
                            chi,
                            rng.uniform(0.0, 0.2),
                            rng,
                        ),
                        {"bilateral": len(pair) == 2},
                    )
                )
        elif kind == "choroid_plexus_calcification":
            for lab in (4, 43):
                vent = np.argwhere(labels == lab)
                if len(vent) == 0 or (lab == 43 and rng.random() < 0.3):
                    continue
                lps = anatomy.to_lps(vent)
                # Atrium (trigone): posterior third of the lateral ventricle, below its centroid.
                atrium = lps[
                    (lps[:, 1] > np.percentile(lps[:, 1], 70))
                    & (lps[:, 2] < np.median(lps[:, 2]) + 5)
                ]
                if len(atrium) == 0:
                    continue
                c = atrium[rng.integers(len(atrium))]
                r = rng.uniform(1.5, 4.0)
                out.append(
                    MimicObject(
                        kind,
                        _obj(
                            c,
                            to_scanner,
                            r * rng.uniform(0.6, 1.0, 3),
                            -rng.uniform(1.0, 3.0),
                            rng.uniform(0.0, 0.15),
                            rng,
                        ),
                    )
                )
        elif kind == "pineal_calcification":
            third = np.argwhere(labels == 14)
            if len(third) == 0:
                continue
            lps = anatomy.to_lps(third)
            back = lps[np.argmax(lps[:, 1])]
            c = back + np.array([0.0, rng.uniform(3, 6), rng.uniform(-1, 2)])
            r = rng.uniform(1.0, 3.0)
            out.append(
                MimicObject(
                    kind,
                    _obj(
                        c,
                        to_scanner,
                        r * rng.uniform(0.7, 1.0, 3),
                        -rng.uniform(1.0, 3.0),
                        rng.uniform(0.0, 0.15),
                        rng,
                    ),
                )
            )
        elif kind == "flow_void":
            stem = anatomy.centroid((16,))
            if stem is None:
                continue
            csf = np.argwhere(labels == 24)
            lps = anatomy.to_lps(csf)
            near = lps[(np.linalg.norm(lps - stem, axis=1) < 40) & (lps[:, 1] < stem[1])]
            for _ in range(int(rng.integers(2, 7))):
                if len(near) == 0:
                    break
                c = near[rng.integers(len(near))]
                r = rng.uniform(1.0, 2.0)
                out.append(
                    MimicObject(
                        kind,
                        _obj(
                            c,
                            to_scanner,
                            (r, r, r * rng.uniform(1.5, 3.0)),
                            0.0,
                            rng.uniform(0.0, 0.1),
                            rng,
                        ),
                    )
                )
        elif kind == "air_bone_artifact":
            stem = anatomy.centroid((16,))
            if stem is None:
                continue
            site = str(rng.choice(["sphenoid", "frontal", "mastoid"]))
            lo, hi = anatomy.brain_lo, anatomy.brain_hi
            if site == "sphenoid":
                c = stem + np.array([0.0, -28.0, -22.0])
            elif site == "frontal":
                c = np.array([anatomy.centre[0], lo[1] + 2.0, lo[2] + 0.35 * (hi[2] - lo[2])])
            else:
                side = float(rng.choice([-1.0, 1.0]))
                c = np.array([anatomy.centre[0] + side * 50.0, stem[1] + 5.0, stem[2] - 10.0])
            r = rng.uniform(6.0, 12.0)
            out.append(
                MimicObject(
                    kind,
                    _obj(c, to_scanner, r * rng.uniform(0.6, 1.0, 3), 9.4, 0.0, rng),
                    {"site": site},
                )
            )
        elif kind in ("cavernoma", "haemorrhage"):
            p = _pick(anatomy, rng, np.isin(labels, PARENCHYMA))
            if p is None:
                continue
            if kind == "cavernoma":
                d, chi, inside = rng.uniform(10, 20), rng.uniform(1.0, 3.0), rng.uniform(0.3, 0.7)
            else:
                d, chi, inside = rng.uniform(12, 30), rng.uniform(0.5, 2.0), rng.uniform(0.1, 0.4)
            out.append(
                MimicObject(
                    kind, _obj(p, to_scanner, d / 2 * rng.uniform(0.7, 1.0, 3), chi, inside, rng)
                )
            )
        else:
            raise ValueError(f"unknown mimic kind {kind!r}")
    return out
