"""Acquisition steps on small arrays: grid, slice profile, k-space, noise, SWI phase mask."""

from __future__ import annotations

import numpy as np
import pytest

from training.synth.acquisition import finish, kspace_effects, make_grid, slice_profile
from training.synth.dipole import phase_mask


def test_grid_spacing_includes_gap_and_covers_points() -> None:
    pts = np.random.default_rng(0).uniform(-60, 60, (500, 3))
    grid = make_grid(
        pts,
        pixel_spacing_mm=(0.9, 0.8),
        slice_thickness_mm=4.0,
        slice_gap_mm=1.0,
        oblique_deg=(15.0, 0.0, 0.0),
        profile="hann",
        n_subslices=8,
    )
    np.testing.assert_allclose(grid.spacing, [5.0, 0.9, 0.8], atol=1e-9)
    inv = np.linalg.inv(grid.affine)
    idx = pts @ inv[:3, :3].T + inv[:3, 3]
    assert np.all(idx >= 0) and np.all(idx <= np.array(grid.shape) - 1)
    # Oblique: the slice normal is tilted 15 degrees from z.
    normal = grid.affine[:3, 0] / 5.0
    assert np.degrees(np.arccos(abs(normal[2]))) == pytest.approx(15.0, abs=1e-6)


@pytest.mark.parametrize("kind", ["box", "hann"])
def test_slice_profile_weights(kind: str) -> None:
    off, w = slice_profile(kind, 4.0, 5.0, 9)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(w >= 0)
    # Box stays inside the slice (not into the gap); Hann has tails to +-thickness.
    assert np.max(np.abs(off)) * 5.0 <= (2.0 if kind == "box" else 4.0)


def test_kspace_truncation_rings_and_ghosting_spreads_signal() -> None:
    img = np.zeros((1, 64, 64), np.complex64)
    img[0, 16:48, 16:48] = 1.0
    rng = np.random.default_rng(0)
    gibbs = np.abs(kspace_effects(img, rng, kspace_fraction=0.5, ghosting=0.0, phase_encode_axis=1))
    assert gibbs.max() > 1.05  # overshoot at the edge
    ghost = np.abs(kspace_effects(img, rng, kspace_fraction=1.0, ghosting=0.5, phase_encode_axis=1))
    assert ghost[0, :12, 16:48].mean() > 0.01  # signal outside the object along phase encoding
    assert (
        np.abs(
            kspace_effects(img, rng, kspace_fraction=1.0, ghosting=0.0, phase_encode_axis=1)
        ).max()
        == 1.0
    )


def test_noise_is_rician_and_phase_mask_darkens_negative_phase() -> None:
    rng = np.random.default_rng(1)
    zero = np.zeros((4, 64, 64), np.complex64)
    mag = finish(zero, rng, bias=0.0, snr=10.0, phase_mask_power=0, intensity_scale=1.0)
    # Rayleigh background: mean sigma*sqrt(pi/2) > 0.
    assert mag.mean() == pytest.approx(0.1 * np.sqrt(np.pi / 2), rel=0.05)
    assert phase_mask(np.array([0.5]), 4)[0] == 1.0
    assert phase_mask(np.array([-np.pi / 2]), 4)[0] == pytest.approx(0.5**4)
    neg = np.full((2, 8, 8), np.exp(-1j * 1.0), np.complex64)
    swi = finish(neg, rng, bias=0.0, snr=1000.0, phase_mask_power=4, intensity_scale=1.0)
    assert swi.mean() == pytest.approx(((np.pi - 1) / np.pi) ** 4, rel=0.02)
