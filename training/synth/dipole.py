"""Susceptibility objects (microbleeds, calcifications, air, cavernomas) and their blooming.

Physics.  A uniformly magnetised sphere of radius ``a`` and susceptibility
difference ``dchi`` (SI, ppm) in a field ``B0`` adds, outside itself, the field
of a point dipole::

    dB(r) = B0 * dchi / 3 * (a / |r|)^3 * (3 cos^2(theta) - 1)

(``theta`` = angle between ``r`` and B0; inside, with the Lorentz-sphere
correction, the offset is zero).  After an echo time ``TE`` the spins at ``r``
carry the phase ``phi = -gamma * dB * TE`` (sign convention: paramagnetic
offsets give negative phase, as in a right-handed SWI system).  A voxel sums
the complex signal of all its spins, weighted by the slice profile across the
slice; where ``phi`` varies across the voxel the sum cancels
(intravoxel dephasing), so the dark spot grows with ``B0 * TE * dchi``, with
voxel size and slice thickness, and has the dipole's orientation dependence:
this is the blooming of a microbleed.  Hemosiderin itself has so short a T2*
that the lesion interior gives (almost) no signal.

Fast model (used by the generator).  Per object, a patch of the acquisition
grid is sampled at sub-voxel positions (``n_inplane`` x ``n_inplane`` in
plane, the slice profile's positions across the slice), the analytic field is
evaluated at each and the complex mean is the voxel's signal factor.
Ellipsoids use the exact inside/outside shape and the field of the sphere of
equal volume (same dipole moment: exact far field, approximate near field).

Full model (:func:`full_model_factor`, for validation).  The object is voxelised
on a fine isotropic grid, its field computed by FFT with the k-space dipole
kernel ``1/3 - kz^2/k^2``, and the complex signal box-averaged over each
acquisition voxel.  ``tests/training/test_synth_dipole.py`` and
docs/synthetic-data.md compare the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

GAMMA_HZ_PER_T = 42.577478e6  # proton gyromagnetic ratio / 2 pi


def dephasing_constant(field_strength_t: float, echo_time_ms: float, chi_ppm: float) -> float:
    """K = gamma * B0 * TE * dchi in radians (phase scale of a dipole)."""
    return float(
        2 * np.pi * GAMMA_HZ_PER_T * field_strength_t * echo_time_ms * 1e-3 * chi_ppm * 1e-6
    )


@dataclass(frozen=True)
class SusceptibilityObject:
    """An ellipsoid with a susceptibility offset and an interior signal, in scanner LPS mm."""

    center_lps: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    rotation: tuple[tuple[float, ...], ...]  # 3x3, columns = ellipsoid axes in LPS
    chi_ppm: float
    interior_signal: float = 0.0  # magnitude factor of the lesion's own voxels (hemosiderin ~0)

    @property
    def equivalent_radius_mm(self) -> float:
        a, b, c = self.semi_axes_mm
        return float((a * b * c) ** (1.0 / 3.0))


@dataclass(frozen=True)
class AcquisitionGrid:
    """Output grid plus what is needed to integrate over a voxel.

    ``affine`` maps (k, j, i, 1) of slice centres to LPS mm; ``profile_offsets``
    are positions across the slice in units of the slice step (centre = 0),
    ``profile_weights`` their weights (sum 1).
    """

    shape: tuple[int, int, int]
    affine: npt.NDArray[np.float64]
    profile_offsets: npt.NDArray[np.float64]
    profile_weights: npt.NDArray[np.float64]

    @property
    def spacing(self) -> npt.NDArray[np.float64]:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def _patch_radius_mm(obj: SusceptibilityObject, k_rad: float, voxel_mm: float) -> float:
    a = max(obj.semi_axes_mm)
    # Distance where the largest dipole phase has fallen to 0.05 rad, at most 15 mm past the
    # surface (a tapered phase there stands in for SWI's high-pass filter).
    r_field = obj.equivalent_radius_mm * (2.0 * abs(k_rad) / (3.0 * 0.05)) ** (1.0 / 3.0)
    return float(np.clip(r_field, a + 1.5 * voxel_mm, a + 15.0))


def object_factor(
    obj: SusceptibilityObject,
    grid: AcquisitionGrid,
    b0_dir: npt.NDArray[np.float64],
    field_strength_t: float,
    echo_time_ms: float,
    n_inplane: int | None = None,
    max_samples: int = 4_000_000,
) -> tuple[tuple[slice, slice, slice], npt.NDArray[np.complex64]] | None:
    """Complex signal factor of one object on a patch of ``grid`` (fast analytic model).

    Returns the patch's slices into the grid and the factor array, or None when
    the object lies outside the grid.
    """
    k_rad = dephasing_constant(field_strength_t, echo_time_ms, obj.chi_ppm)
    spacing = grid.spacing
    radius = _patch_radius_mm(obj, k_rad, float(spacing[1:].max()))
    inv = np.linalg.inv(grid.affine)
    c_idx = inv[:3, :3] @ np.asarray(obj.center_lps) + inv[:3, 3]
    half = np.ceil(radius / spacing).astype(int) + 1
    lo = np.maximum(np.floor(c_idx).astype(int) - half, 0)
    hi = np.minimum(np.floor(c_idx).astype(int) + half + 1, grid.shape)
    if np.any(hi <= lo):
        return None
    n_vox = int(np.prod(hi - lo))
    n_ip = n_inplane or int(np.clip(np.ceil(spacing[1:].max() / 0.2), 3, 5))
    n_prof = len(grid.profile_offsets)
    while n_ip > 2 and n_vox * n_ip * n_ip * n_prof > max_samples:
        n_ip -= 1
    ip = (np.arange(n_ip) + 0.5) / n_ip - 0.5
    # Sub-sample offsets in index units: (n_sub, 3).
    ok, oj, oi = np.meshgrid(grid.profile_offsets, ip, ip, indexing="ij")
    offsets = np.stack([ok.ravel(), oj.ravel(), oi.ravel()], axis=1)
    weights = np.repeat(grid.profile_weights, n_ip * n_ip) / (n_ip * n_ip)
    kk, jj, ii = np.meshgrid(*(np.arange(lo[a], hi[a]) for a in range(3)), indexing="ij")
    vox = np.stack([kk.ravel(), jj.ravel(), ii.ravel()], axis=1).astype(np.float64) - c_idx
    a3 = grid.affine[:3, :3]
    # r[v, s, :] in mm relative to the object centre.
    r = (vox @ a3.T)[:, None, :] + (offsets @ a3.T)[None, :, :]
    rot = np.asarray(obj.rotation, dtype=np.float64)
    q = (r @ rot) / np.asarray(obj.semi_axes_mm)
    inside = np.einsum("vsk,vsk->vs", q, q) <= 1.0
    dist2 = np.einsum("vsk,vsk->vs", r, r)
    a_eq = obj.equivalent_radius_mm
    dist2 = np.maximum(dist2, a_eq * a_eq)
    cos2 = (r @ b0_dir) ** 2 / dist2
    phase = -(k_rad / 3.0) * (a_eq**3 / dist2**1.5) * (3.0 * cos2 - 1.0)
    # Taper the phase to zero over the outer 40% of the patch: no step at its border.
    taper = np.clip((radius - np.sqrt(dist2)) / (0.4 * radius), 0.0, 1.0)
    phase *= taper * taper * (3.0 - 2.0 * taper)
    signal = np.where(inside, obj.interior_signal + 0j, np.exp(1j * phase))
    factor = (signal @ weights).astype(np.complex64).reshape(tuple(hi - lo))
    return (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2])), factor


def phase_mask(phase: npt.NDArray[np.floating], power: int) -> npt.NDArray[np.float32]:
    """SWI negative-phase mask (Haacke 2004): 1 for phase >= 0, (pi + phase)/pi below, ^power."""
    if power <= 0:
        return np.ones(phase.shape, dtype=np.float32)
    m = np.where(phase < 0, (np.pi + phase) / np.pi, 1.0)
    return np.clip(m, 0.0, 1.0).astype(np.float32) ** power


def visible_factor(
    factor: npt.NDArray[np.complex64], phase_mask_power: int
) -> npt.NDArray[np.float32]:
    """What a reader sees of a factor: magnitude, times the SWI phase mask when there is one."""
    mag = np.abs(factor).astype(np.float32)
    if phase_mask_power > 0:
        mag *= phase_mask(np.angle(factor), phase_mask_power)
    return mag


def full_model_factor(
    obj: SusceptibilityObject,
    voxel_mm: tuple[float, float, float],
    n_voxels: int,
    b0_dir: npt.NDArray[np.float64],
    field_strength_t: float,
    echo_time_ms: float,
    fine_mm: float = 0.1,
) -> npt.NDArray[np.complex64]:
    """Reference: FFT dipole field on a fine grid, box-averaged into an axis-aligned voxel grid.

    The acquisition grid is ``n_voxels`` (odd) voxels of size ``voxel_mm``
    (slice, row, column along LPS z, y, x) centred on the object.  Returns the
    complex factor on that grid, for comparison with :func:`object_factor`.
    """
    if n_voxels % 2 == 0:
        raise ValueError("n_voxels must be odd (the object sits at the centre voxel)")
    sub = [max(1, round(v / fine_mm)) for v in voxel_mm]
    fine_shape = [n_voxels * s for s in sub]
    steps = [v / s for v, s in zip(voxel_mm, sub, strict=True)]
    # Fine-grid coordinates in LPS (axes: z, y, x), centred on the object.
    axes = [(np.arange(n) - (n - 1) / 2.0) * st for n, st in zip(fine_shape, steps, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    r = np.stack([x, y, z], axis=-1)
    q = (r @ np.asarray(obj.rotation, dtype=np.float64)) / np.asarray(obj.semi_axes_mm)
    chi = (np.einsum("...k,...k->...", q, q) <= 1.0).astype(np.float64)
    inside = chi > 0
    # Zero-pad twice the size to avoid wrap-around of the dipole field.
    pad_shape = [2 * n for n in fine_shape]
    k_axes = [np.fft.fftfreq(n, d=st) for n, st in zip(pad_shape, steps, strict=True)]
    kz, ky, kx = np.meshgrid(*k_axes, indexing="ij")
    kvec = np.stack([kx, ky, kz], axis=-1)
    k2 = np.einsum("...k,...k->...", kvec, kvec)
    kb = kvec @ b0_dir
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(k2 > 0, 1.0 / 3.0 - kb * kb / k2, 0.0)
    field = np.fft.ifftn(kernel * np.fft.fftn(chi, s=pad_shape, axes=(0, 1, 2))).real
    field = field[: fine_shape[0], : fine_shape[1], : fine_shape[2]]
    k_rad = dephasing_constant(field_strength_t, echo_time_ms, obj.chi_ppm)
    signal = np.where(inside, obj.interior_signal + 0j, np.exp(-1j * k_rad * field))
    blocks = signal.reshape(n_voxels, sub[0], n_voxels, sub[1], n_voxels, sub[2])
    return blocks.mean(axis=(1, 3, 5)).astype(np.complex64)
