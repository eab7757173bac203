"""Region, distances and MARS category on a real SynthSeg label map (ground truth)."""

from __future__ import annotations

import numpy as np
import pytest

from model.location.region import Region, neighbourhood, patch_around, region_of
from model.types import MarsCategory, Volume

from .conftest import interior_voxel, voxel_lps


@pytest.mark.parametrize(
    ("label", "mars", "hemisphere"),
    [
        (10, MarsCategory.DEEP, "left"),
        (51, MarsCategory.DEEP, "right"),
        (13, MarsCategory.DEEP, "left"),
        (16, MarsCategory.INFRATENTORIAL, None),
        (47, MarsCategory.INFRATENTORIAL, "right"),
        (17, MarsCategory.LOBAR, "left"),
    ],
)
def test_detection_at_a_label_voxel_gets_that_region(
    parc: Volume, label: int, mars, hemisphere
) -> None:
    point = voxel_lps(parc, interior_voxel(parc, label))
    reg = region_of(parc, point, diameter_mm=2.0)
    assert reg.label == label
    assert reg.mars is mars
    assert reg.hemisphere == hemisphere


def test_cortex_is_lobar_with_zero_cortex_distance(parc: Volume) -> None:
    arr = np.rint(parc.array)
    idx = np.argwhere(arr == 42)
    # a cortex voxel whose 3x3x3 neighbourhood is mostly cortex
    for k in idx[:: max(1, len(idx) // 400)]:
        box = arr[k[0] - 1 : k[0] + 2, k[1] - 1 : k[1] + 2, k[2] - 1 : k[2] + 2]
        if (box == 42).mean() > 0.7:
            break
    reg = region_of(parc, voxel_lps(parc, k), diameter_mm=2.0)
    assert reg.label == 42
    assert reg.mars is MarsCategory.LOBAR
    assert reg.distance_cortex_mm == 0.0


def test_white_matter_split_periventricular_deep_vs_juxtacortical_lobar(parc: Volume) -> None:
    arr = np.rint(parc.array)
    wm = np.argwhere(arr == 2)
    found: dict[str, Region] = {}
    for k in wm[:: max(1, len(wm) // 2000)]:
        reg = region_of(parc, voxel_lps(parc, k), diameter_mm=2.0)
        if reg.label != 2:
            continue
        if reg.distance_ventricle_mm <= 4.0:
            found.setdefault("periventricular", reg)
        elif (
            reg.distance_cortex_mm <= 2.0
            and reg.distance_ventricle_mm > 20
            and reg.distance_deep_nuclei_mm > 20
        ):
            found.setdefault("juxtacortical", reg)
    assert found["periventricular"].mars is MarsCategory.DEEP
    assert found["periventricular"].wm_subclass == "periventricular"
    assert found["juxtacortical"].mars is MarsCategory.LOBAR
    assert found["juxtacortical"].wm_subclass == "juxtacortical"


def _two_label_volume(left: int, right: int) -> Volume:
    arr = np.full((20, 20, 20), float(left), dtype=np.float32)
    arr[:, :, 10:] = right
    return Volume(array=arr, affine=np.diag([1.0, 1.0, 1.0, 1.0]))


def test_blooming_straddling_cortex_and_csf_is_cortex() -> None:
    vol = _two_label_volume(3, 24)  # cortex | sulcal CSF
    centre = (10.0, 10.0, 10.0)  # the first CSF voxel: blooming reaches into the cortex
    nb = neighbourhood(vol, centre, 3.0)
    assert 0.3 <= nb.parenchyma_fraction < 0.5
    reg = region_of(vol, centre, diameter_mm=2.0)
    assert reg.label == 3
    assert reg.mars is MarsCategory.LOBAR


def test_candidate_deep_in_csf_is_csf() -> None:
    vol = _two_label_volume(3, 24)
    reg = region_of(vol, (10.0, 10.0, 16.0), diameter_mm=2.0)
    assert reg.label == 24
    assert reg.distance_cortex_mm == pytest.approx(7.0)


def test_patch_distances_are_in_mm_on_anisotropic_grids() -> None:
    arr = np.zeros((10, 40, 40), dtype=np.float32)
    arr[5, 20, 30] = 4  # one ventricle voxel
    vol = Volume(array=arr, affine=np.diag([3.0, 0.5, 0.5, 1.0]))  # 3 mm slices, 0.5 mm pixels
    patch = patch_around(vol, (15.0, 10.0, 10.0), 20.0)  # voxel (5, 20, 20)
    assert patch.distance_to({4}) == pytest.approx(5.0)
    assert patch_around(vol, (21.0, 10.0, 15.0), 20.0).distance_to({4}) == pytest.approx(6.0)


def test_point_outside_the_label_map_is_background() -> None:
    vol = _two_label_volume(3, 24)
    reg = region_of(vol, (10.0, 10.0, 60.0), diameter_mm=2.0)
    assert reg.label == 0
    assert reg.distance_cortex_mm == float("inf")
    near = region_of(vol, (10.0, 10.0, 30.0), diameter_mm=2.0)  # 11 mm outside the map
    assert near.label == 0
    assert near.distance_cortex_mm > 11.0
