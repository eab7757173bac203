"""The MARS rating of a study: counts, definite vs possible, and the pattern.

* Only kept detections count.
* **Definite vs possible**: a kept detection is *definite* when its
  probability is >= ``definite_probability`` and *possible* below it (it
  already passed the model's threshold).  This mirrors MARS's certain /
  uncertain microbleeds with the model's probability standing in for the
  rater's confidence.  The band depends on which score decided: the U-Net's
  probability (``DEFINITE_UNET``, 0.8) or, behind the cascade, the candidate
  classifier's, which keeps only scores >= its threshold (0.68 for the
  shipped classifier 0.5.0) (``DEFINITE_CLASSIFIER``, 0.995: with the
  location filter behind the shipped pair, on the untouched test set 9 all
  19 detections at or above it were true microbleeds and 33 of 62 between
  0.68 and 0.995; on the selection set 17 of 18 / 15 of 27, from
  ``filter_effect --summarise --threshold 0.68 --candidates``; every
  earlier classifier's split is in the table of docs/location-filter.md).
* **Pattern** (of all kept detections, and of the definite ones alone):
  ``none`` (no microbleed), ``strictly_lobar`` (every categorised microbleed
  lobar: the pattern of cerebral amyloid angiopathy in the Boston criteria),
  ``deep_infratentorial`` (deep and/or infratentorial only: hypertensive
  arteriopathy), ``mixed`` (lobar together with deep or infratentorial).
  Detections without a category are listed as ``uncategorised`` and do not
  change the pattern.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from model.location.lobes import LOBES
from model.types import Detection, MarsCategory

CATEGORIES = tuple(c.value for c in MarsCategory)
HEMISPHERES = ("left", "right", "midline")
#: Definite from this probability when it is the U-Net's.
DEFINITE_UNET = 0.8
#: Definite from this probability when it is the candidate classifier's.
DEFINITE_CLASSIFIER = 0.995


def certainty(det: Detection, definite_probability: float) -> str:
    """``definite`` at or above the band, else ``possible`` (the outputs say it per finding)."""
    return "definite" if det.probability >= definite_probability else "possible"


def pattern(categories: Iterable[MarsCategory | None]) -> str:
    cats = {c for c in categories if c is not None}
    if not cats:
        return "none"
    lobar = MarsCategory.LOBAR in cats
    other = bool(cats - {MarsCategory.LOBAR})
    if lobar and other:
        return "mixed"
    return "strictly_lobar" if lobar else "deep_infratentorial"


def mars_rating(
    detections: Iterable[Detection], *, definite_probability: float = DEFINITE_UNET
) -> dict[str, Any]:
    """Counts per MARS category / lobe / hemisphere, definite vs possible, and the pattern."""
    if not 0.0 <= definite_probability <= 1.0:
        raise ValueError(f"definite_probability must be in [0, 1], got {definite_probability}")
    kept = [d for d in detections if d.kept]
    empty = {"definite": 0, "possible": 0, "total": 0}
    by_category: dict[str, dict[str, int]] = {
        c: dict(empty) for c in (*CATEGORIES, "uncategorised")
    }
    by_lobe: dict[str, dict[str, int]] = {
        lobe: {h: 0 for h in (*HEMISPHERES, "total")} for lobe in (*LOBES, "undetermined")
    }
    by_hemisphere: dict[str, dict[str, int]] = {h: dict(empty) for h in (*HEMISPHERES, "unknown")}
    for d in kept:
        band = certainty(d, definite_probability)
        cat = d.mars.value if d.mars else "uncategorised"
        for table, key in ((by_category, cat), (by_hemisphere, d.hemisphere or "unknown")):
            table.setdefault(key, dict(empty))
            table[key][band] += 1
            table[key]["total"] += 1
        if d.mars is MarsCategory.LOBAR:
            lobe = d.lobe if d.lobe in LOBES else "undetermined"
            side = d.hemisphere if d.hemisphere in HEMISPHERES else "midline"
            by_lobe[lobe][side] += 1
            by_lobe[lobe]["total"] += 1
    definite = [d for d in kept if certainty(d, definite_probability) == "definite"]
    return {
        "total": len(kept),
        "definite": len(definite),
        "possible": len(kept) - len(definite),
        "definite_probability": definite_probability,
        "by_category": by_category,
        "by_lobe": by_lobe,
        "by_hemisphere": by_hemisphere,
        "pattern": pattern(d.mars for d in kept),
        "pattern_definite": pattern(d.mars for d in definite),
    }
