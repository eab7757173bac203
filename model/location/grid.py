"""The canonical working grid of the parcellation network.

The network is trained and run on an axis-aligned LPS grid at its own spacing
(2 mm): array axis 0 (k) points superior, axis 1 (j) posterior, axis 2 (i)
left, which is how an axial DICOM series is usually stacked.  Any input
(sagittal, coronal, oblique) is resampled onto such a grid covering its
extent, so the network always sees brains in one orientation (up to the
small head rotations that training augments), and the result is resampled
back with nearest-neighbour interpolation.
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

from model.types import Volume

#: Unit LPS direction of each array axis (k, j, i) of the canonical grid: S, P, L.
CANONICAL_DIRECTIONS = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]).T


def corners_lps(volume: Volume) -> npt.NDArray[np.float64]:
    """LPS positions of the 8 outer voxel corners of ``volume`` (8 x 3)."""
    shape = np.asarray(volume.shape, dtype=np.float64)
    pts = np.array(
        [
            [(s - 0.5) if hi else -0.5 for s, hi in zip(shape, c, strict=True)]
            for c in itertools.product((0, 1), repeat=3)
        ]
    )
    return volume.index_to_lps(pts)


def canonical_grid(
    volume: Volume, spacing_mm: float = 2.0, *, divisor: int = 1
) -> tuple[npt.NDArray[np.float64], tuple[int, int, int]]:
    """Affine and shape of the S/P/L-aligned grid at ``spacing_mm`` covering ``volume``.

    The shape is rounded up to a multiple of ``divisor`` (the network's
    pooling factor); the extra voxels are split evenly on both sides.
    """
    if spacing_mm <= 0:
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    corners = corners_lps(volume)
    lo = corners.min(axis=0)
    hi = corners.max(axis=0)
    # Extent along (S, P, L) = LPS (z, y, x).
    extent = (hi - lo)[[2, 1, 0]]
    n = np.maximum(1, np.ceil(extent / spacing_mm - 1e-6)).astype(int)
    if divisor > 1:
        n = (np.ceil(n / divisor) * divisor).astype(int)
    centre = (lo + hi) / 2.0
    affine = np.eye(4)
    affine[:3, :3] = CANONICAL_DIRECTIONS * spacing_mm
    # Voxel centre of index (n-1)/2 sits at the centre of the extent.
    affine[:3, 3] = centre - affine[:3, :3] @ ((n - 1) / 2.0)
    return affine, (int(n[0]), int(n[1]), int(n[2]))


def empty_like_grid(affine: npt.NDArray[np.float64], shape: tuple[int, int, int]) -> Volume:
    """A zero Volume that only carries a grid (the target of a resampling)."""
    return Volume(
        array=np.zeros(shape, dtype=np.float32), affine=np.asarray(affine, dtype=np.float64)
    )
