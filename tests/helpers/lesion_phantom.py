"""Volumes with dark lesions of known contrast: conspicuity and input-filter tests."""

from __future__ import annotations

import numpy as np

from model.types import Volume

SHAPE = (12, 40, 40)


def lesion_phantom() -> tuple[np.ndarray, np.ndarray]:
    """Noise of sd 2 around 100; label 1 a dark disc on two slices (20: CNR about 40),
    label 2 a faint one (97: CNR about 1.5), label 3 a single very dark voxel in label 1's
    ring (which the ring must leave out), label 4 absent."""
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 2.0, SHAPE).astype(np.float32)
    labels = np.zeros(SHAPE, np.int32)
    jj, ii = np.indices(SHAPE[1:])
    for label, (j, i), value in ((1, (10, 10), 20.0), (2, (28, 28), 97.0)):
        disc = (jj - j) ** 2 + (ii - i) ** 2 <= 4
        labels[5:7][:, disc] = label
        image[5:7][:, disc] = value
    labels[5, 10, 14] = 3
    image[5, 10, 14] = -1000.0
    return image, labels


def dot_volume(inplane_mm: float) -> Volume:
    """A flat 100 volume of 6 x 40 x 40 voxels with one dark voxel (slice 3, row and column
    21), 2 mm slices and ``inplane_mm`` pixels (the input filter's tests)."""
    array = np.full((6, 40, 40), 100.0, np.float32)
    array[3, 21, 21] = 0.0
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = inplane_mm, inplane_mm, 2.0, 1.0
    return Volume(array, affine)
