"""The location filter: where each candidate is, which are implausible, the MARS rating.

Public entry points (called by :mod:`model.pipeline` after candidate extraction):

* :func:`parcellate` -> label map (FreeSurfer ids) on the volume's grid;
* :func:`locate_and_filter` fills ``region``/``mars``/``lobe``/``hemisphere`` of
  every detection still kept (candidates the classifier rejected are not
  located: each costs about a second) and rejects implausible ones with a
  reason code;
* :func:`mars_rating` -> counts per MARS category, lobe and hemisphere,
  definite vs possible, and the overall pattern.

See ``docs/location-filter.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from model.location import rules
from model.location.lobes import BrainFrame, brain_frame, lobe_of
from model.location.rating import mars_rating
from model.location.region import Region, RegionParams, region_of
from model.location.vessel import dark_structure, is_vessel
from model.types import Detection, MarsCategory, SequenceKind, SeriesInfo, Volume

if TYPE_CHECKING:
    from model.location.parcellation import parcellate


def __getattr__(name: str) -> Any:
    """``parcellate`` on first use: it loads SimpleITK and ONNX Runtime, which the
    label tables, regions and rules (read by ``evaluation``) do not need."""
    if name == "parcellate":
        from model.location.parcellation import parcellate

        return parcellate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class LocationConfig:
    """Every threshold and switch of the location filter (defaults documented in docs/)."""

    # region
    neighbourhood_margin_mm: float = 2.0
    neighbourhood_min_radius_mm: float = 2.0
    min_parenchyma_fraction: float = 0.3
    periventricular_mm: float = 10.0
    capsule_mm: float = 6.0
    callosal_mm: float = 3.0
    # lobes
    lobe_margin_mm: float = 6.0
    insula_putamen_mm: float = 15.0
    occipital_fraction: float = 0.2
    # rules
    outside_brain: bool = True
    csf: bool = True
    csf_soft_on_swi: bool = True
    csf_soft_min_probability: float = 0.9
    choroid_plexus: bool = True
    # Off on SWI: behind the classifier few calcifications reach the rule there,
    # and over five synthetic sets it removed 3 false positives and 2 true
    # periventricular CMBs on SWI (41 and 2 on T2*; docs/location-filter.md).
    choroid_on_swi: bool = False
    # The atrium box and the pineal radius cover ~90 % of the selection set's
    # choroid-plexus (12 of 13) and pineal (14 of 16) calcifications, measured
    # from the shipped parcellation's pulvinars (docs/location-filter.md).
    choroid_min_ventricle_fraction: float = 0.2
    choroid_front_mm: float = 5.0
    choroid_behind_mm: float = 30.0
    choroid_vertical_mm: float = 20.0
    pineal: bool = True
    pineal_radius_mm: float = 10.0
    symmetric_calcification: bool = True
    symmetry_tolerance_mm: float = 8.0
    # Off by default: behind the cascade the candidate's size comes from the
    # network's blurred map (1.5x the apparent size, median); at 10 mm the rule
    # removed 6 false positives and 16 true microbleeds on the held-out set
    # (docs/location-filter.md, "Measured behind the shipped cascade").
    too_large: bool = False
    max_diameter_mm: float = 10.0
    tubular: bool = True
    tubular_elongation: float = 3.0
    tubular_min_length_mm: float = 6.0
    tubular_min_slices: int = 3
    # With the image (the pipeline passes it) the rule reads the half-contrast
    # dark structure through the candidate instead (model.location.vessel): it
    # shows a vein that runs on where the network's map saw only a round piece,
    # and a compact bleed where the map's blur looked like a tube.  Blooming
    # along B0 elongates true CMBs too (up to 2.96 among the development sets'
    # detected CMBs), so the bar sits above that (docs/location-filter.md).
    # The three settings above then apply only where the image shows no dark spot.
    tubular_on_image: bool = True
    tubular_image_elongation: float = 3.2
    tubular_image_min_length_mm: float = 9.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                continue
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"LocationConfig.{f.name} must be a non-negative number, got {value!r}"
                )
        for name in (
            "min_parenchyma_fraction",
            "csf_soft_min_probability",
            "occipital_fraction",
            "choroid_min_ventricle_fraction",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"LocationConfig.{name} must be in [0, 1], got {getattr(self, name)}"
                )
        for name in ("tubular_elongation", "tubular_image_elongation"):
            if getattr(self, name) < 1.0:
                raise ValueError(f"LocationConfig.{name} must be >= 1")

    @property
    def region_params(self) -> RegionParams:
        return RegionParams(
            margin_mm=self.neighbourhood_margin_mm,
            min_radius_mm=self.neighbourhood_min_radius_mm,
            min_parenchyma_fraction=self.min_parenchyma_fraction,
            periventricular_mm=self.periventricular_mm,
            capsule_mm=self.capsule_mm,
            callosal_mm=self.callosal_mm,
        )

    @property
    def atrium_zone(self) -> rules.AtriumZone:
        return rules.AtriumZone(
            self.choroid_min_ventricle_fraction,
            self.choroid_front_mm,
            self.choroid_behind_mm,
            self.choroid_vertical_mm,
        )

    def only(self, rule: str) -> LocationConfig:
        """This configuration with every rule off except ``rule`` (for measuring one rule)."""
        if rule not in rules.REASON_CODES:
            raise ValueError(f"unknown rule {rule!r}; expected one of {rules.REASON_CODES}")
        switches = {code: code == rule for code in rules.REASON_CODES}
        return LocationConfig(
            **{**{f.name: getattr(self, f.name) for f in fields(self)}, **switches}
        )


def _side(frame: BrainFrame | None, point: tuple[float, float, float]) -> str | None:
    if frame is None:
        return "left" if point[0] > 0 else "right"  # LPS x: patient left positive
    u = frame.coords(point)[0]
    if abs(u) < 2.0:
        return "midline"
    return "left" if u > 0 else "right"


def locate(
    detections: list[Detection], parcellation: Volume, config: LocationConfig | None = None
) -> tuple[dict[int, Region], BrainFrame | None]:
    """Region of every kept detection and the brain frame (fills region/mars/lobe/hemisphere).

    Detections an earlier stage rejected (``kept`` false) are skipped: they are
    not reported, and locating one costs about a second on a whole SWI volume.
    """
    cfg = config or LocationConfig()
    frame = brain_frame(parcellation)
    regions: dict[int, Region] = {}
    for det in detections:
        if not det.kept:
            continue
        reg = region_of(
            parcellation,
            det.center_lps_mm,
            det.diameter_mm,
            cfg.region_params,
            side_of_midline=_side(frame, det.center_lps_mm),
        )
        regions[det.id] = reg
        det.region = reg.name
        det.region_label = reg.label
        det.mars = reg.mars
        det.hemisphere = reg.hemisphere
        det.lobe = None
        if reg.mars is MarsCategory.LOBAR and frame is not None:
            det.lobe = lobe_of(
                det.center_lps_mm,
                reg.label,
                reg.hemisphere,
                frame,
                reg.distance_putamen_mm,
                margin_mm=cfg.lobe_margin_mm,
                insula_putamen_mm=cfg.insula_putamen_mm,
                occipital_fraction=cfg.occipital_fraction,
            )
    return regions, frame


def locate_and_filter(
    detections: list[Detection],
    labels: Volume,
    parcellation: Volume,
    series_info: SeriesInfo,
    config: LocationConfig | None = None,
    *,
    image: Volume | None = None,
) -> dict[int, Region]:
    """Locate every detection and reject the implausible ones (see :mod:`model.location.rules`).

    ``labels`` is the candidate label volume (voxel value = ``Detection.id``),
    used for the shape of each candidate; ``parcellation`` a label map from
    :func:`parcellate`, on any grid; ``image`` the series itself (any grid),
    for the shape of the dark structure through each candidate (without it
    ``tubular`` reads the candidate's own shape only).  Returns the region of
    every detection.
    """
    cfg = config or LocationConfig()
    regions, frame = locate(detections, parcellation, cfg)
    apply_rules(detections, regions, frame, labels, series_info, cfg, image=image)
    return regions


def apply_rules(
    detections: list[Detection],
    regions: dict[int, Region],
    frame: BrainFrame | None,
    labels: Volume,
    series_info: SeriesInfo,
    config: LocationConfig | None = None,
    *,
    image: Volume | None = None,
) -> None:
    """The rejection rules alone, on detections already located by :func:`locate`."""
    cfg = config or LocationConfig()
    symmetric = (
        rules.symmetric_pairs(detections, regions, frame, cfg.symmetry_tolerance_mm)
        if cfg.symmetric_calcification
        else set()
    )
    for det in detections:
        if not det.kept:
            continue
        reason = _first_rule(
            det, regions[det.id], frame, labels, image, series_info, cfg, symmetric
        )
        if reason is not None:
            det.reject(reason)


def _first_rule(
    det: Detection,
    reg: Region,
    frame: BrainFrame | None,
    labels: Volume,
    image: Volume | None,
    series: SeriesInfo,
    cfg: LocationConfig,
    symmetric: set[int],
) -> str | None:
    if cfg.outside_brain and rules.is_outside_brain(reg):
        return rules.OUTSIDE_BRAIN
    choroid_applies = cfg.choroid_on_swi or series.sequence_kind is not SequenceKind.SWI
    if (
        cfg.choroid_plexus
        and choroid_applies
        and rules.is_choroid_plexus(reg, det.center_lps_mm, frame, cfg.atrium_zone)
    ):
        return rules.CHOROID_PLEXUS
    if cfg.csf and rules.is_csf(
        reg, det, series.sequence_kind, cfg.csf_soft_min_probability, cfg.csf_soft_on_swi
    ):
        return rules.CSF
    if cfg.pineal and rules.is_pineal(det.center_lps_mm, frame, cfg.pineal_radius_mm):
        return rules.PINEAL
    if cfg.symmetric_calcification and det.id in symmetric:
        return rules.SYMMETRIC_CALCIFICATION
    if cfg.too_large and det.diameter_mm > cfg.max_diameter_mm:
        return rules.TOO_LARGE
    if cfg.tubular and _is_tubular(det, labels, image, cfg):
        return rules.TUBULAR
    return None


def _is_tubular(det: Detection, labels: Volume, image: Volume | None, cfg: LocationConfig) -> bool:
    """The dark structure on the image decides where there is one; else the candidate's shape.

    The candidate's own component is a piece of the network's map, whose shape
    follows the map's blur: on thick slices it called true microbleeds tubes
    that the image shows compact (docs/location-filter.md).
    """
    if image is not None and cfg.tubular_on_image:
        structure = dark_structure(image, det.center_lps_mm)
        if structure is not None:
            return is_vessel(
                structure, cfg.tubular_image_elongation, cfg.tubular_image_min_length_mm
            )
    shape = rules.candidate_shape(labels, det.id)
    return rules.is_tubular(
        shape, det, cfg.tubular_elongation, cfg.tubular_min_length_mm, cfg.tubular_min_slices
    )


__all__ = [
    "LocationConfig",
    "Region",
    "apply_rules",
    "locate",
    "locate_and_filter",
    "mars_rating",
    "parcellate",
]
