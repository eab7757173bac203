from __future__ import annotations

import pytest

from model.location import mars_rating
from model.location.rating import pattern
from model.types import Detection, MarsCategory


def d(
    i: int, mars: MarsCategory | None, p: float, lobe: str | None = None, hemi: str | None = "left"
) -> Detection:
    det = Detection(i, (0.0, 0.0, 0.0), 3.0, 10.0, p)
    det.mars, det.lobe, det.hemisphere = mars, lobe, hemi
    return det


def test_counts_bands_and_lobes() -> None:
    dets = [
        d(1, MarsCategory.LOBAR, 0.95, "frontal", "left"),
        d(2, MarsCategory.LOBAR, 0.6, "occipital", "right"),
        d(3, MarsCategory.LOBAR, 0.7, None, "right"),
        d(4, MarsCategory.DEEP, 0.9, None, "left"),
        d(5, MarsCategory.INFRATENTORIAL, 0.99, None, "midline"),
    ]
    rejected = d(6, MarsCategory.LOBAR, 0.99, "parietal")
    rejected.reject("csf")
    r = mars_rating([*dets, rejected])
    assert (r["total"], r["definite"], r["possible"]) == (5, 3, 2)
    assert r["by_category"]["lobar"] == {"definite": 1, "possible": 2, "total": 3}
    assert r["by_category"]["deep"]["definite"] == 1
    assert r["by_category"]["infratentorial"]["total"] == 1
    assert r["by_lobe"]["frontal"]["left"] == 1
    assert r["by_lobe"]["occipital"]["right"] == 1
    assert r["by_lobe"]["undetermined"]["total"] == 1
    assert r["by_lobe"]["parietal"]["total"] == 0  # rejected detections do not count
    assert r["by_hemisphere"]["right"]["total"] == 2
    assert r["pattern"] == "mixed"
    assert r["pattern_definite"] == "mixed"


def test_patterns() -> None:
    lob, deep, inf = MarsCategory.LOBAR, MarsCategory.DEEP, MarsCategory.INFRATENTORIAL
    assert pattern([]) == "none"
    assert pattern([lob, lob, None]) == "strictly_lobar"
    assert pattern([deep, inf]) == "deep_infratentorial"
    assert pattern([lob, inf]) == "mixed"
    r = mars_rating([d(1, lob, 0.95), d(2, deep, 0.55)])
    assert (r["pattern"], r["pattern_definite"]) == ("mixed", "strictly_lobar")


def test_band_threshold_is_validated() -> None:
    with pytest.raises(ValueError, match="definite_probability"):
        mars_rating([], definite_probability=2.0)
    assert mars_rating([d(1, MarsCategory.DEEP, 0.7)], definite_probability=0.6)["definite"] == 1
