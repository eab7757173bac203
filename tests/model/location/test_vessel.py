"""The dark structure through a candidate: a vein runs on, a microbleed ends."""

from __future__ import annotations

import numpy as np
import pytest

from model.location import LocationConfig
from model.location.vessel import DarkStructure, dark_structure, is_vessel, sample_cube
from model.types import Volume

BACKGROUND = 100.0
#: the thresholds the location filter ships with
SHIPPED = {
    "min_elongation": LocationConfig().tubular_image_elongation,
    "min_length_mm": LocationConfig().tubular_image_min_length_mm,
}


def tissue(shape=(60, 60, 60), spacing=(1.0, 1.0, 1.0), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy uniform tissue and the mm coordinates (k, j, i order) of every voxel centre."""
    rng = np.random.default_rng(seed)
    array = BACKGROUND + rng.normal(0.0, 3.0, shape)
    grid = np.indices(shape).astype(np.float64) * np.asarray(spacing)[:, None, None, None]
    return array, grid


def volume(array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Volume:
    """Axis-aligned: index (k, j, i) sits at LPS (k, j, i) * spacing, as in ``tissue``'s grid."""
    return Volume(array.astype(np.float32), np.diag([*spacing, 1.0]))


def centre_lps(vol: Volume) -> np.ndarray:
    return vol.index_to_lps(np.asarray(vol.shape, dtype=np.float64) / 2.0 - 0.5)


def with_sphere(array, grid, centre_mm, radius_mm, depth=70.0):
    d = np.linalg.norm(grid - np.asarray(centre_mm)[:, None, None, None], axis=0)
    return array - depth * (d <= radius_mm)


def with_tube(array, grid, point_mm, direction, radius_mm, depth=70.0):
    u = np.asarray(direction, dtype=np.float64)
    u /= np.linalg.norm(u)
    rel = grid - np.asarray(point_mm)[:, None, None, None]
    along = np.tensordot(u, rel, axes=1)
    across = np.linalg.norm(rel - along * u[:, None, None, None], axis=0)
    return array - depth * (across <= radius_mm)


def test_sample_cube_reads_the_image_around_the_point():
    array, _ = tissue()
    array[30, 30, 30] = -500.0
    vol = volume(array)
    cube = sample_cube(vol, vol.index_to_lps([30, 30, 30]), half_size_mm=5)
    assert cube.shape == (11, 11, 11)
    assert cube[5, 5, 5] == pytest.approx(-500.0)


def test_a_round_bleed_is_a_compact_blob():
    array, grid = tissue()
    array = with_sphere(array, grid, (30, 30, 30), 2.5)
    vol = volume(array)
    s = dark_structure(vol, vol.index_to_lps([30, 30, 30]))
    assert s is not None
    assert s.elongation < 1.5
    assert 3.0 < s.length_mm < 7.0
    assert not s.touches_border
    assert not is_vessel(s, **SHIPPED)


@pytest.mark.parametrize("direction", [(0, 0, 1), (1, 0, 0), (1, 1, 0), (1, 1, 1)])
def test_a_vein_crossing_the_cube_is_a_vessel(direction):
    array, grid = tissue()
    array = with_tube(array, grid, (30, 30, 30), direction, 1.0)
    vol = volume(array)
    s = dark_structure(vol, vol.index_to_lps([30, 30, 30]))
    assert s is not None
    assert s.elongation > 4.0
    assert s.length_mm > 20.0
    assert s.touches_border
    assert is_vessel(s, **SHIPPED)


def test_a_bleed_on_thick_slices_is_not_a_vessel():
    """6 mm slices spread a 4 mm bleed over one slice: short along the slice axis still."""
    spacing = (6.0, 1.0, 1.0)
    array, grid = tissue(shape=(12, 60, 60), spacing=spacing)
    array = with_sphere(array, grid, (36, 30, 30), 2.5)
    vol = volume(array, spacing)
    s = dark_structure(vol, vol.index_to_lps([6, 30, 30]))
    assert s is not None
    assert not is_vessel(s, **SHIPPED)


def test_a_vein_through_thick_slices_is_a_vessel():
    spacing = (5.0, 1.0, 1.0)
    array, grid = tissue(shape=(12, 60, 60), spacing=spacing)
    array = with_tube(array, grid, (30, 30, 30), (1, 0, 0), 1.0)
    vol = volume(array, spacing)
    s = dark_structure(vol, vol.index_to_lps([6, 30, 30]))
    assert is_vessel(s, **SHIPPED)


def test_a_bleed_beside_a_darker_vein_is_seeded_on_itself():
    """The seed is the darkest point near the centre, not a vein 8 mm away."""
    array, grid = tissue()
    array = with_sphere(array, grid, (30, 30, 30), 2.5, depth=60.0)
    array = with_tube(array, grid, (30, 38, 30), (0, 0, 1), 1.0, depth=90.0)
    vol = volume(array)
    s = dark_structure(vol, vol.index_to_lps([30, 30, 30]))
    assert not is_vessel(s, **SHIPPED)


def test_flat_tissue_has_no_structure():
    vol = volume(np.full((30, 30, 30), BACKGROUND))
    assert dark_structure(vol, centre_lps(vol)) is None
    assert not is_vessel(None, 2.5, 12.0)


def test_is_vessel_needs_both_elongation_and_length():
    long_thick = DarkStructure(2.0, 30.0, 15.0, 900.0, 0.5, True)
    short_thin = DarkStructure(4.0, 8.0, 2.0, 20.0, 0.5, False)
    long_thin = DarkStructure(4.0, 20.0, 2.0, 60.0, 0.5, True)
    assert not is_vessel(long_thick, 2.5, 12.0)
    assert not is_vessel(short_thin, 2.5, 12.0)
    assert is_vessel(long_thin, 2.5, 12.0)
