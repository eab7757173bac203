"""Per-sample geometry: left/right flip, smooth elastic field, random head pose.

The flip and the elastic field are applied to the label map on its own 1 mm
grid (nearest neighbour, labels and MARS map together); the random affine
(rotation, scale, shear) is only a matrix, composed later with the oblique
acquisition grid so that the image is interpolated once.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from training.synth.anatomy import Subject, flip_lut
from training.synth.fields import smooth_field


def rotation_matrix(deg: tuple[float, float, float]) -> npt.NDArray[np.float64]:
    """Rotation about LPS x, then y, then z (degrees)."""
    ax, ay, az = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def head_pose_matrix(
    rotation_deg: tuple[float, float, float],
    scale: tuple[float, float, float],
    shear: tuple[float, float, float],
) -> npt.NDArray[np.float64]:
    """3x3 linear part of the random head pose (anatomy LPS -> scanner LPS, about the centre)."""
    sh = np.eye(3)
    sh[0, 1], sh[0, 2], sh[1, 2] = shear
    return rotation_matrix(rotation_deg) @ sh @ np.diag(scale)


def deform_subject(
    subject: Subject,
    rng: np.random.Generator,
    *,
    flip_lr: bool,
    elastic_sigma_mm: float,
    elastic_spacing_mm: float,
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int8]]:
    """Flip and elastically deform a subject's labels and MARS map on its own grid."""
    labels, mars = subject.labels, subject.mars
    if flip_lr:
        # Array axis 2 runs along LPS x (left-right) for the SynthSeg maps.
        lr_axis = int(np.argmax(np.abs(subject.affine[0, :3])))
        labels = flip_lut()[np.flip(labels, axis=lr_axis)]
        mars = np.flip(mars, axis=lr_axis)
    if elastic_sigma_mm <= 0:
        return np.ascontiguousarray(labels), np.ascontiguousarray(mars)
    shape = np.array(labels.shape)
    orders = tuple(int(v) for v in np.maximum(np.ceil(shape / elastic_spacing_mm), 2))
    code = labels.astype(np.int32) * 8 + mars.astype(np.int32)
    coords = np.indices(tuple(shape), dtype=np.float32)
    for axis in range(3):
        disp = smooth_field(tuple(shape), rng, orders)  # type: ignore[arg-type]
        coords[axis] += np.float32(elastic_sigma_mm) * disp
    warped = ndi.map_coordinates(code, coords, order=0, mode="nearest")
    return (warped // 8).astype(np.int16), (warped % 8).astype(np.int8)
