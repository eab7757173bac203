"""Ground-truth parcellations for the location tests: real SynthSeg label maps at 2 mm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.location import labels as lt
from model.location.grid import canonical_grid, empty_like_grid
from model.location.parcellation import labels_onto, read_label_nifti
from model.types import Volume


def brain_labels(shared: Path, subject: int = 17) -> Volume:
    """A held-out SynthSeg label map, non-brain labels set to 0, on the canonical 2 mm grid."""
    path = (
        shared / "synthseg" / "data" / "training_label_maps" / f"training_seg_{subject:02d}.nii.gz"
    )
    vol = read_label_nifti(path)
    arr = vol.array.copy()
    arr[~np.isin(arr, lt.LABEL_IDS)] = 0
    affine, shape = canonical_grid(vol, 2.0)
    return labels_onto(vol.with_array(arr), empty_like_grid(affine, shape))


@pytest.fixture(scope="session")
def parc(shared_data: Path) -> Volume:
    return brain_labels(shared_data)


def voxel_lps(vol: Volume, index: np.ndarray) -> tuple[float, float, float]:
    p = vol.index_to_lps(np.asarray(index, dtype=np.float64))
    return (float(p[0]), float(p[1]), float(p[2]))


def interior_voxel(vol: Volume, label: int, depth: int = 1) -> np.ndarray:
    """The most central voxel of ``label`` whose (2 depth + 1)^3 neighbourhood is all ``label``."""
    from scipy import ndimage

    mask = np.rint(vol.array) == label
    core = ndimage.binary_erosion(mask, iterations=depth)
    if not core.any():
        core = mask
    idx = np.argwhere(core)
    centre = idx.mean(axis=0)
    return idx[np.argmin(np.linalg.norm(idx - centre, axis=1))]
