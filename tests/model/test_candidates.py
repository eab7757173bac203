"""Threshold + connected components + per-candidate features in LPS mm."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from model.candidates import extract_candidates
from model.types import Volume
from tests.helpers.onnx_factory import oblique_affine


def grid_lps(shape: tuple[int, ...], affine: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    result: npt.NDArray[np.float64] = idx @ affine[:3, :3].T + affine[:3, 3]
    return result


def balls(
    shape: tuple[int, ...],
    affine: npt.NDArray[np.float64],
    centres: list[npt.NDArray[np.float64]],
    radii: list[float],
) -> Volume:
    """Probability 0.9 inside each ball (LPS centre, radius in mm), 0 outside."""
    lps = grid_lps(shape, affine)
    prob = np.zeros(shape, np.float32)
    for c, r in zip(centres, radii, strict=True):
        prob[np.linalg.norm(lps - c, axis=-1) <= r] = 0.9
    return Volume(array=prob, affine=affine)


@pytest.mark.parametrize("spacing", [(0.5, 0.5, 0.5), (1.5, 0.45, 0.45), (1.0, 0.6, 0.8)])
def test_spheres_give_centre_volume_diameter(spacing: tuple[float, float, float]) -> None:
    shape = tuple(int(40 / s) for s in spacing)
    affine = oblique_affine(spacing)
    middle = affine[:3, :3] @ (np.array(shape) / 2) + affine[:3, 3]
    centres = [middle + d for d in ([0.3, -0.2, 0.1], [10.0, 8.0, -6.0], [-9.0, -7.0, 8.0])]
    radii = [4.0, 3.0, 5.0]
    labels, dets = extract_candidates(balls(shape, affine, centres, radii), 0.5)
    assert len(dets) == 3
    voxel = max(spacing)
    for c, r in zip(centres, radii, strict=True):
        d = min(dets, key=lambda d: float(np.linalg.norm(np.subtract(d.center_lps_mm, c))))
        assert np.linalg.norm(np.subtract(d.center_lps_mm, c)) < 0.25 * voxel
        true_volume = 4 / 3 * math.pi * r**3
        assert d.volume_mm3 == pytest.approx(true_volume, rel=0.12)
        assert d.diameter_mm == pytest.approx(2 * r, rel=0.05)
        assert d.elongation < 1.3
        assert d.n_voxels == int((labels.array == d.id).sum())
        assert d.volume_mm3 == pytest.approx(d.n_voxels * labels.voxel_volume_mm3)
        assert d.probability == pytest.approx(0.9)
        assert d.mean_probability == pytest.approx(0.9)


def test_elongated_tube_has_high_elongation() -> None:
    affine = oblique_affine((0.5, 0.5, 0.5))
    shape = (60, 60, 60)
    lps = grid_lps(shape, affine)
    centre = affine[:3, :3] @ np.array([30, 30, 30]) + affine[:3, 3]
    axis = np.array([1.0, 1.0, 0.0]) / math.sqrt(2)
    rel = lps - centre
    along = rel @ axis
    radial = np.linalg.norm(rel - along[..., None] * axis, axis=-1)
    tube = (np.abs(along) <= 10) & (radial <= 1.5)  # 20 mm long, 3 mm thick
    _, dets = extract_candidates(Volume(array=tube.astype(np.float32), affine=affine), 0.5)
    assert len(dets) == 1
    # Uniform rod: sqrt(var_along / var_radial) = sqrt((L^2 / 12) / (R^2 / 4)) = 7.70.
    assert dets[0].elongation == pytest.approx(7.70, rel=0.1)
    np.testing.assert_allclose(dets[0].center_lps_mm, centre, atol=0.1)


def test_centre_is_probability_weighted() -> None:
    prob = np.zeros((5, 5, 9), np.float32)
    prob[2, 2, 2:7] = [0.6, 0.6, 0.6, 0.6, 1.0]
    affine = np.diag([2.0, 1.0, 0.5, 1.0])
    affine[:3, 3] = [10.0, 20.0, 30.0]
    _, dets = extract_candidates(Volume(array=prob, affine=affine), 0.5)
    (d,) = dets
    column = (0.6 * (2 + 3 + 4 + 5) + 1.0 * 6) / 3.4
    np.testing.assert_allclose(d.center_lps_mm, [14.0, 22.0, 30.0 + 0.5 * column])
    assert d.probability == pytest.approx(1.0)
    assert d.mean_probability == pytest.approx(3.4 / 5)
    assert d.n_voxels == 5


def test_ids_follow_raster_order_and_26_connectivity() -> None:
    prob = np.zeros((6, 6, 6), np.float32)
    prob[4, 0, 0] = 1.0  # later slice: second id
    prob[0, 3, 3] = 1.0
    prob[1, 4, 4] = 1.0  # touches (0, 3, 3) by a corner only: same component (26-connected)
    prob[0, 0, 5] = 0.7
    labels, dets = extract_candidates(Volume(array=prob, affine=np.eye(4)), 0.5)
    assert [d.id for d in dets] == [1, 2, 3]
    assert labels.array[0, 0, 5] == 1
    assert labels.array[0, 3, 3] == 2
    assert labels.array[1, 4, 4] == 2
    assert labels.array[4, 0, 0] == 3
    assert [d.n_voxels for d in dets] == [1, 2, 1]
    assert labels.array.dtype == np.uint16
    # A single isotropic voxel is as round as a box gets.
    assert dets[0].elongation == pytest.approx(1.0)


def test_min_volume_drops_small_components_and_renumbers() -> None:
    prob = np.zeros((10, 10, 10), np.float32)
    prob[1, 1, 1] = 0.8  # 1 voxel = 8 mm3
    prob[5:8, 5:8, 5:8] = 0.8  # 27 voxels = 216 mm3
    volume = Volume(array=prob, affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    labels, dets = extract_candidates(volume, 0.5, min_volume_mm3=10.0)
    assert len(dets) == 1
    assert dets[0].id == 1
    assert dets[0].volume_mm3 == pytest.approx(216.0)
    assert set(np.unique(labels.array)) == {0, 1}
    assert labels.array[1, 1, 1] == 0


def test_nothing_above_threshold() -> None:
    volume = Volume(array=np.full((4, 4, 4), 0.3, np.float32), affine=np.eye(4))
    labels, dets = extract_candidates(volume, 0.5)
    assert dets == []
    assert not labels.array.any()
    assert labels.shape == volume.shape
    with pytest.raises(ValueError, match="threshold"):
        extract_candidates(volume, 1.5)


def test_size_counts_the_voxels_at_the_size_level_not_the_whole_low_threshold_component() -> None:
    # A blurred blob as the network draws it: the component at 0.3 includes a rim
    # that the size (and the size rule) must not count.
    sigma = 3.0
    k, j, i = np.mgrid[:40, :40, :40]
    prob = np.exp(-((k - 20) ** 2 + (j - 20) ** 2 + (i - 20) ** 2) / (2 * sigma**2))
    volume = Volume(array=prob.astype(np.float32), affine=np.eye(4))
    _, (det,) = extract_candidates(volume, 0.3)
    r50 = sigma * math.sqrt(2 * math.log(2))
    r30 = sigma * math.sqrt(2 * math.log(1 / 0.3))
    assert det.diameter_mm == pytest.approx(2 * r50, rel=0.1)
    assert det.n_voxels == pytest.approx(4 / 3 * math.pi * r30**3, rel=0.1)
    _, (whole,) = extract_candidates(volume, 0.3, size_level=0.0)
    assert whole.diameter_mm == pytest.approx(2 * r30, rel=0.1)
    # a weak candidate (peak below the size level) still has the size of its peak
    _, (weak,) = extract_candidates(volume.with_array(volume.array * 0.4), 0.3)
    assert weak.volume_mm3 == 1.0
