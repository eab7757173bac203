"""Vein rendering: dark, orientation-dependent, with partial volume for sub-mm veins."""

from __future__ import annotations

import numpy as np

from training.synth.vessels import Vein, render_veins

AFFINE = np.eye(4)
SHAPE = (40, 40, 40)


def _render(points: np.ndarray, radius: float, b0: np.ndarray, swi: bool = False) -> np.ndarray:
    return render_veins(
        SHAPE,
        AFFINE,
        [Vein("test", points, radius)],
        b0_dir_subject=b0,
        field_strength_t=3.0,
        echo_time_ms=20.0,
        chi_ppm=0.45,
        phase_mask_power=4 if swi else 0,
    )


def test_vein_is_dark_and_thin_veins_still_show() -> None:
    line = np.array([[20.0, 20.0, 5.0], [20.0, 20.0, 35.0]])  # along axis 2
    b0 = np.array([1.0, 0.0, 0.0])  # perpendicular to the vein: strongest blooming
    thick = _render(line, 1.5, b0)
    thin = _render(line, 0.3, b0)
    assert thick[20, 20, 20] < 0.3
    assert thin[20, 20, 20] < 0.8  # a 0.3 mm vein darkens the 1 mm voxel it crosses
    assert thick[20, 30, 20] == 1.0  # far away: untouched
    # A 2 mm vein perpendicular to B0 blooms wider than one along B0.
    across = _render(line, 1.0, b0)
    along = _render(line, 1.0, np.array([0.0, 0.0, 1.0]))
    assert (across < 0.5).sum() > 1.5 * (along < 0.5).sum()


def test_swi_phase_mask_enhances_veins_along_b0() -> None:
    line = np.array([[20.0, 20.0, 5.0], [20.0, 20.0, 35.0]])
    b0 = np.array([0.0, 0.0, 1.0])
    mag = _render(line, 0.8, b0)
    swi = _render(line, 0.8, b0, swi=True)
    assert swi[20, 20, 20] < mag[20, 20, 20]
