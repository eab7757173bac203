"""What the scanner and its reconstruction do: grid, slice profile, k-space, bias, noise, SWI.

Order of operations (each step is deterministic given the params and the
seeded generator passed in):

1. The oblique acquisition grid is laid over the (posed) head; every voxel
   integrates the 1 mm tissue image across its slice profile (box for 3D,
   Hann-shaped with tails for 2D selective excitation; 2D slices may have gaps),
   which is where partial volume comes from.
2. Susceptibility objects (microbleeds, calcifications, ...) multiply their
   complex sub-voxel factors in (see :mod:`training.synth.dipole`).
3. In-plane k-space: truncation (Gibbs ringing) and random phase errors on
   phase-encode lines (motion ghosting).
4. Coil bias field, complex Gaussian noise (magnitude -> Rician), SWI
   phase-mask multiplication of the magnitude, global intensity scaling.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft
from scipy import ndimage as ndi

from training.synth.deform import rotation_matrix
from training.synth.dipole import AcquisitionGrid, phase_mask
from training.synth.fields import smooth_field


def slice_profile(
    kind: str, thickness_mm: float, step_mm: float, n: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Sub-slice offsets (units of the slice step) and weights of a slice profile."""
    if kind == "box":
        u = ((np.arange(n) + 0.5) / n - 0.5) * thickness_mm
        w = np.ones(n)
    elif kind == "hann":
        # Hann window with FWHM = nominal thickness: spans +-thickness.
        u = ((np.arange(n) + 0.5) / n - 0.5) * 2.0 * thickness_mm
        w = np.cos(np.pi * u / (2.0 * thickness_mm)) ** 2
    else:
        raise ValueError(f"unknown slice profile {kind!r}")
    return u / step_mm, w / w.sum()


def make_grid(
    brain_points_lps: npt.NDArray[np.float64],
    *,
    pixel_spacing_mm: tuple[float, float],
    slice_thickness_mm: float,
    slice_gap_mm: float,
    oblique_deg: tuple[float, float, float],
    profile: str,
    n_subslices: int,
    margin_mm: float = 10.0,
) -> AcquisitionGrid:
    """An oblique axial grid covering the given scanner-space points plus a margin."""
    rot = rotation_matrix(oblique_deg)
    normal, col_dir, row_dir = rot[:, 2], rot[:, 1], rot[:, 0]
    step = slice_thickness_mm + slice_gap_mm
    axes = np.stack([normal, col_dir, row_dir], axis=1)  # (k, j, i) directions
    proj = brain_points_lps @ axes
    lo = proj.min(0) - np.array([slice_thickness_mm, margin_mm, margin_mm])
    hi = proj.max(0) + np.array([slice_thickness_mm, margin_mm, margin_mm])
    spacing = np.array([step, pixel_spacing_mm[0], pixel_spacing_mm[1]])
    n = np.ceil((hi - lo) / spacing).astype(int) + 1
    shape = (int(n[0]), int(n[1]), int(n[2]))
    affine = np.eye(4)
    affine[:3, :3] = axes * spacing
    affine[:3, 3] = axes @ lo
    offsets, weights = slice_profile(profile, slice_thickness_mm, step, n_subslices)
    return AcquisitionGrid(
        shape=shape, affine=affine, profile_offsets=offsets, profile_weights=weights
    )


def sample_tissue(
    tissue: npt.NDArray[np.float32],
    tissue_affine: npt.NDArray[np.float64],
    scanner_from_tissue: npt.NDArray[np.float64],
    grid: AcquisitionGrid,
) -> npt.NDArray[np.float32]:
    """Integrate the tissue image over each acquisition voxel's slice profile (trilinear)."""
    # acquisition index -> scanner LPS -> tissue LPS -> tissue index
    index_from_acq = np.linalg.inv(tissue_affine) @ np.linalg.inv(scanner_from_tissue) @ grid.affine
    out = np.zeros(grid.shape, dtype=np.float32)
    for offset, weight in zip(grid.profile_offsets, grid.profile_weights, strict=True):
        shift = index_from_acq[:3, :3] @ np.array([offset, 0.0, 0.0])
        sample = ndi.affine_transform(
            tissue,
            index_from_acq[:3, :3],
            offset=index_from_acq[:3, 3] + shift,
            output_shape=grid.shape,
            order=1,
            mode="constant",
            cval=0.0,
            prefilter=False,
        )
        out += np.float32(weight) * sample
    return out


def kspace_effects(
    image: npt.NDArray[np.complex64],
    rng: np.random.Generator,
    *,
    kspace_fraction: float,
    ghosting: float,
    phase_encode_axis: int,
) -> npt.NDArray[np.complex64]:
    """In-plane k-space truncation (Gibbs) and per-line phase errors (motion ghosts)."""
    if kspace_fraction >= 1.0 and ghosting <= 0.0:
        return image
    k = sfft.fft2(image, axes=(1, 2), workers=1)
    if kspace_fraction < 1.0:
        for axis in (1, 2):
            n = image.shape[axis]
            freq = np.abs(sfft.fftfreq(n))
            keep = (freq <= 0.5 * kspace_fraction).astype(np.float32)
            shape = [1, 1, 1]
            shape[axis] = n
            k *= keep.reshape(shape)
    if ghosting > 0.0:
        n = image.shape[phase_encode_axis]
        hit = rng.random(n) < 0.3
        errors = np.where(hit, rng.normal(0.0, ghosting, n), 0.0)
        shape = [1, 1, 1]
        shape[phase_encode_axis] = n
        k *= np.exp(1j * errors).astype(np.complex64).reshape(shape)
    return sfft.ifft2(k, axes=(1, 2), workers=1).astype(np.complex64)


def bias_field(
    shape: tuple[int, int, int], rng: np.random.Generator, amplitude: float
) -> npt.NDArray[np.float32]:
    """Smooth multiplicative coil-sensitivity field exp(amplitude * N(0,1) smooth)."""
    field = smooth_field(shape, rng, (3, 4, 4))
    return np.exp(np.float32(amplitude) * field).astype(np.float32)


def finish(
    image: npt.NDArray[np.complex64],
    rng: np.random.Generator,
    *,
    bias: float,
    snr: float,
    phase_mask_power: int,
    intensity_scale: float,
) -> npt.NDArray[np.float32]:
    """Bias, Rician noise, SWI phase mask and scaling; returns the magnitude image."""
    image = image * bias_field(image.shape, rng, bias)
    sigma = 1.0 / snr  # white matter = 1
    noise = rng.standard_normal((2, *image.shape), dtype=np.float32) * np.float32(sigma)
    noisy = image + (noise[0] + 1j * noise[1]).astype(np.complex64)
    mag = np.abs(noisy).astype(np.float32)
    if phase_mask_power > 0:
        mag *= phase_mask(np.angle(noisy), phase_mask_power)
    return (mag * np.float32(intensity_scale)).astype(np.float32)
