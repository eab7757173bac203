"""Rejection rules of the location filter, each with a reason code and its own switch.

Applied in this order; the first rule that fires sets ``reject_reason``:

=============================  ==============================================================
reason code                    fires when
=============================  ==============================================================
``outside_brain``              the region is background (less than 30 % brain tissue around
                               the candidate and background dominates)
``choroid_plexus``             in a lateral ventricle (at least ``min_ventricle_fraction`` of
                               the neighbourhood is ventricle) at its atrium: from 5 mm in
                               front of to 30 mm behind the ipsilateral pulvinar, within
                               20 mm of it vertically (:class:`AtriumZone`)
``csf``                        the region is CSF or a ventricle.  Hard on T2*-GRE; on SWI
                               (where a hard CSF rule deletes true cortical CMBs, whose
                               blooming leaks into sulci) it is soft: reject only when the
                               probability is below ``csf_soft_min_probability``
``pineal``                     within ``pineal_radius_mm`` of the expected pineal position
                               (5 mm behind the midpoint of the pulvinars) and within 6 mm of
                               the midline
``symmetric_calcification``    in a pallidum (or a cerebellar white matter = dentate) with
                               another candidate in the mirror structure at the mirrored
                               position (<= ``symmetry_tolerance_mm``): both rejected
``too_large``                  diameter > ``max_diameter_mm`` (10 mm)
``tubular``                    the dark structure through the candidate on the image
                               (:mod:`model.location.vessel`) is a vessel: principal-axis
                               ratio >= ``tubular_image_elongation`` and length >=
                               ``tubular_image_min_length_mm``.  Without the image (or no
                               dark spot on it): the candidate's own component has ratio >=
                               ``tubular_elongation`` and length >= ``tubular_min_length_mm``,
                               with the long axis in-plane or across >=
                               ``tubular_min_slices`` slices (a vein, not a bleed seen on
                               thick slices)
=============================  ==============================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model.location import labels as lt
from model.location.lobes import BrainFrame
from model.location.region import Region
from model.types import Detection, SequenceKind, Volume

OUTSIDE_BRAIN = "outside_brain"
CSF = "csf"
CHOROID_PLEXUS = "choroid_plexus"
PINEAL = "pineal"
SYMMETRIC_CALCIFICATION = "symmetric_calcification"
TOO_LARGE = "too_large"
TUBULAR = "tubular"
REASON_CODES = (
    OUTSIDE_BRAIN,
    CHOROID_PLEXUS,
    CSF,
    PINEAL,
    SYMMETRIC_CALCIFICATION,
    TOO_LARGE,
    TUBULAR,
)


@dataclass(frozen=True)
class Shape:
    """Principal-axis shape of a candidate's voxels (LPS mm)."""

    elongation: float  # sqrt(largest / second eigenvalue): tubes >> 1, spheres and discs ~ 1
    length_mm: float  # full length along the long axis (uniform-rod estimate)
    n_slices: int
    long_axis_through_plane: bool


def candidate_shape(labels: Volume, detection_id: int) -> Shape | None:
    """Shape of component ``detection_id`` in the candidate label volume (None if absent)."""
    idx = np.argwhere(np.rint(labels.array).astype(np.int64) == detection_id)
    if idx.shape[0] == 0:
        return None
    pts = labels.index_to_lps(idx)
    a = labels.affine[:3, :3]
    # Each voxel is a box, not a point: add its own covariance (side^2 / 12 per axis).
    cov = np.cov(pts.T, bias=True) if len(pts) > 1 else np.zeros((3, 3))
    cov = cov + a @ a.T / 12.0
    evals, evecs = np.linalg.eigh(cov)
    evals = np.clip(evals, 1e-9, None)
    long_axis = evecs[:, 2]
    normal = a[:, 0] / np.linalg.norm(a[:, 0])
    return Shape(
        elongation=float(np.sqrt(evals[2] / evals[1])),
        length_mm=float(np.sqrt(12.0 * evals[2])),
        n_slices=len(np.unique(idx[:, 0])),
        long_axis_through_plane=bool(abs(long_axis @ normal) > 0.7),
    )


def is_outside_brain(region: Region) -> bool:
    return region.label == 0 or region.label not in lt.BY_ID


def is_csf(
    region: Region,
    det: Detection,
    sequence: SequenceKind,
    soft_min_probability: float,
    swi_soft: bool,
) -> bool:
    if not lt.info(region.label).is_fluid:
        return False
    if sequence is SequenceKind.SWI and swi_soft:
        return det.probability < soft_min_probability
    return True


@dataclass(frozen=True)
class AtriumZone:
    """Where choroid plexus calcifications sit: in the lateral ventricle at its atrium.

    ``min_ventricle_fraction``: the share of the candidate's neighbourhood
    sphere (:mod:`model.location.region`) that is lateral ventricle.  A
    distance to the ventricle cannot tell a calcified glomus (in the lumen,
    its blooming reaching the wall) from a periventricular microbleed (in the
    wall, its blooming reaching the lumen) at 2 mm parcellation and thick
    slices; how much of the neighbourhood is ventricle can, more often.
    The atrium: from ``front_mm`` in front of to ``behind_mm`` behind the
    ipsilateral pulvinar, within ``vertical_mm`` of it vertically.  Values:
    :class:`model.location.LocationConfig`.
    """

    min_ventricle_fraction: float
    front_mm: float
    behind_mm: float
    vertical_mm: float


def is_choroid_plexus(
    region: Region, point_lps: npt.ArrayLike, frame: BrainFrame | None, zone: AtriumZone
) -> bool:
    if frame is None:
        return False
    in_ventricle = (
        region.label in lt.LATERAL_VENTRICLES
        or region.neighbourhood.fraction(lt.LATERAL_VENTRICLES) >= zone.min_ventricle_fraction
    )
    if not in_ventricle:
        return False
    behind, above = frame.from_pulvinar(point_lps)
    return -zone.front_mm <= behind <= zone.behind_mm and abs(above) <= zone.vertical_mm


def is_pineal(point_lps: npt.ArrayLike, frame: BrainFrame | None, radius_mm: float) -> bool:
    if frame is None:
        return False
    p = np.asarray(point_lps, dtype=np.float64)
    u = frame.coords(p)[0]
    return abs(u) <= 6.0 and float(np.linalg.norm(p - frame.pineal)) <= radius_mm


_SYMMETRIC_PAIRS = (
    (lt.PALLIDUM["left"], lt.PALLIDUM["right"]),
    (lt.CEREBELLUM_WM["left"], lt.CEREBELLUM_WM["right"]),
)


def symmetric_pairs(
    detections: list[Detection],
    regions: dict[int, Region],
    frame: BrainFrame | None,
    tolerance_mm: float,
) -> set[int]:
    """Ids of candidates that have a mirror-image partner in the paired structure."""
    if frame is None:
        return set()
    out: set[int] = set()
    located = [d for d in detections if d.id in regions]
    for left, right in _SYMMETRIC_PAIRS:
        lefts = [d for d in located if regions[d.id].label == left]
        rights = [d for d in located if regions[d.id].label == right]
        for a in lefts:
            mirrored = frame.mirror(a.center_lps_mm, left, right)
            if mirrored is None:
                continue
            for b in rights:
                if float(np.linalg.norm(np.asarray(b.center_lps_mm) - mirrored)) <= tolerance_mm:
                    out.update((a.id, b.id))
    return out


def is_tubular(
    shape: Shape | None, det: Detection, elongation: float, min_length_mm: float, min_slices: int
) -> bool:
    if shape is None:
        # No mask: a prolate ellipsoid of equivalent diameter d and axis ratio e is d e^(2/3) long.
        length = det.diameter_mm * det.elongation ** (2.0 / 3.0)
        return det.elongation >= elongation and length >= min_length_mm
    if shape.elongation < elongation or shape.length_mm < min_length_mm:
        return False
    return not shape.long_axis_through_plane or shape.n_slices >= min_slices
