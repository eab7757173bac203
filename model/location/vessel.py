"""Is the dark spot under a candidate part of a vessel?  Its shape on the image itself.

The ``tubular`` rule first read the shape of the candidate's own component of
the network's probability map.  A vein the networks take for a microbleed is
usually only a short, round piece of that map (the networks learned to score
spots), so that shape rarely looks like a tube.  The image shows more: a vein
is a dark structure that runs on, a microbleed a dark blob that ends.

:func:`dark_structure` follows the dark structure through the candidate on
the image: it samples an LPS-aligned cube of ``half_size_mm`` around the
candidate on a 1 mm grid (trilinear, so the slice thickness of 2D series is
spread over the through-plane axis as on the image), smooths it by
``smoothing_mm``, seeds at the darkest point within ``seed_radius_mm`` of
the centre and keeps the voxels connected to it (26-connectivity) that are
darker than half way between that minimum and the cube's median (the
half-contrast level, as for a microbleed's apparent size).  Its principal
axes give the elongation and length; :func:`is_vessel` applies the
thresholds.

Hand-written because no imaging library offers "the connected half-contrast
structure through a point" as one call; the parts are SciPy's
(``map_coordinates``, ``gaussian_filter``, ``label``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from model.types import Volume


@dataclass(frozen=True)
class DarkStructure:
    """Shape of the half-contrast dark structure through a candidate (mm)."""

    elongation: float  # sqrt(largest / second principal variance): tubes >> 1
    length_mm: float  # along the long axis (uniform-rod estimate)
    width_mm: float  # along the second axis (uniform-rod estimate)
    volume_mm3: float
    contrast: float  # (median - minimum) / median of the cube; small: no dark spot
    touches_border: bool  # the structure reaches the cube's faces


def sample_cube(image: Volume, center_lps: npt.ArrayLike, half_size_mm: float) -> npt.NDArray:
    """``image`` on a 1 mm LPS-aligned cube around ``center_lps`` (trilinear, edge clamped)."""
    n = round(half_size_mm)
    offsets = np.arange(-n, n + 1, dtype=np.float64)
    grid = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 3)
    index = image.lps_to_index(grid + np.asarray(center_lps, dtype=np.float64))
    values = ndimage.map_coordinates(
        np.asarray(image.array, dtype=np.float32), index.T, order=1, mode="nearest"
    )
    return values.reshape((2 * n + 1,) * 3)


def dark_structure(
    image: Volume,
    center_lps: npt.ArrayLike,
    *,
    half_size_mm: float = 15.0,
    seed_radius_mm: float = 2.0,
    smoothing_mm: float = 1.0,
) -> DarkStructure | None:
    """The dark structure through ``center_lps`` (None when the cube has no contrast)."""
    cube = ndimage.gaussian_filter(sample_cube(image, center_lps, half_size_mm), smoothing_mm)
    n = cube.shape[0] // 2
    ball = np.linalg.norm(np.indices(cube.shape) - n, axis=0) <= seed_radius_mm
    seed = np.unravel_index(int(np.argmin(np.where(ball, cube, np.inf))), cube.shape)
    darkest = float(cube[seed])
    median = float(np.median(cube))
    if not median > darkest or median <= 0:
        return None
    components, _ = ndimage.label(
        cube < darkest + 0.5 * (median - darkest), structure=np.ones((3, 3, 3))
    )
    mask = components == components[seed]
    points = np.argwhere(mask).astype(np.float64)
    # each voxel is a 1 mm box: its own variance (1/12 per axis) keeps one voxel finite
    cov = (np.cov(points.T, bias=True) if len(points) > 1 else np.zeros((3, 3))) + np.eye(3) / 12
    evals = np.clip(np.linalg.eigvalsh(cov), 1e-9, None)
    border = bool(
        mask[0].any()
        or mask[-1].any()
        or mask[:, 0].any()
        or mask[:, -1].any()
        or mask[:, :, 0].any()
        or mask[:, :, -1].any()
    )
    return DarkStructure(
        elongation=float(np.sqrt(evals[2] / evals[1])),
        length_mm=float(np.sqrt(12.0 * evals[2])),
        width_mm=float(np.sqrt(12.0 * evals[1])),
        volume_mm3=float(mask.sum()),
        contrast=(median - darkest) / median,
        touches_border=border,
    )


def is_vessel(structure: DarkStructure | None, min_elongation: float, min_length_mm: float) -> bool:
    """A long, thin dark structure: a vein (or a flow void), not a microbleed's blob."""
    if structure is None:
        return False
    return structure.elongation >= min_elongation and structure.length_mm >= min_length_mm
