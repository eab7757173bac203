"""Anatomy for synthetic cases: the SynthSeg whole-head label maps.

Subjects 1-16 are for training, 17-20 for validation only; asking for a
validation subject in a training split is an error (never a silent swap).

Each subject is loaded once per process, cropped to the head, and enriched with
a MARS map (lobar / deep / infratentorial per brain voxel) so that microbleeds
can be placed by category.  Labels are FreeSurfer's (see the shared data README).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from model.paths import shared_data_dir

TRAIN_SUBJECTS: tuple[int, ...] = tuple(range(1, 17))
VAL_SUBJECTS: tuple[int, ...] = (17, 18, 19, 20)

# FreeSurfer names of the labels that occur in the maps.
LABEL_NAMES: dict[int, str] = {
    0: "Unknown",
    2: "Left-Cerebral-White-Matter",
    3: "Left-Cerebral-Cortex",
    4: "Left-Lateral-Ventricle",
    5: "Left-Inf-Lat-Vent",
    7: "Left-Cerebellum-White-Matter",
    8: "Left-Cerebellum-Cortex",
    10: "Left-Thalamus",
    11: "Left-Caudate",
    12: "Left-Putamen",
    13: "Left-Pallidum",
    14: "3rd-Ventricle",
    15: "4th-Ventricle",
    16: "Brain-Stem",
    17: "Left-Hippocampus",
    18: "Left-Amygdala",
    24: "CSF",
    25: "Left-Lesion",
    26: "Left-Accumbens-area",
    28: "Left-VentralDC",
    30: "Left-vessel",
    41: "Right-Cerebral-White-Matter",
    42: "Right-Cerebral-Cortex",
    43: "Right-Lateral-Ventricle",
    44: "Right-Inf-Lat-Vent",
    46: "Right-Cerebellum-White-Matter",
    47: "Right-Cerebellum-Cortex",
    49: "Right-Thalamus",
    50: "Right-Caudate",
    51: "Right-Putamen",
    52: "Right-Pallidum",
    53: "Right-Hippocampus",
    54: "Right-Amygdala",
    57: "Right-Lesion",
    58: "Right-Accumbens-area",
    60: "Right-VentralDC",
    62: "Right-vessel",
    72: "5th-Ventricle",
    85: "Optic-Chiasm",
}

LEFT_RIGHT_PAIRS: tuple[tuple[int, int], ...] = (
    (2, 41), (3, 42), (4, 43), (5, 44), (7, 46), (8, 47), (10, 49), (11, 50), (12, 51),
    (13, 52), (17, 53), (18, 54), (25, 57), (26, 58), (28, 60), (30, 62),
)  # fmt: skip

WM = (2, 41)
CORTEX = (3, 42)
LATERAL_VENTRICLES = (4, 43)
INF_LAT_VENTRICLES = (5, 44)
VENTRICLES = (4, 5, 14, 15, 43, 44, 72)
DEEP_GREY = (10, 11, 12, 13, 26, 28, 49, 50, 51, 52, 58, 60)
INFRATENTORIAL = (7, 8, 16, 46, 47)
LOBAR_GREY = (3, 42, 17, 18, 53, 54)
PALLIDUM = (13, 52)
# Brain parenchyma where a microbleed may sit (no CSF, ventricles, vessels, lesions).
PARENCHYMA = (*WM, *LOBAR_GREY, *DEEP_GREY, *INFRATENTORIAL)
MAX_LABEL = 600

MARS_NONE, MARS_LOBAR, MARS_DEEP, MARS_INFRA = 0, 1, 2, 3
MARS_NAMES = {MARS_LOBAR: "lobar", MARS_DEEP: "deep", MARS_INFRA: "infratentorial"}


def label_name(label: int) -> str:
    return LABEL_NAMES.get(int(label), f"label-{int(label)}")


def flip_lut() -> npt.NDArray[np.int16]:
    """Lookup table that swaps left and right labels (for a left/right mirrored head)."""
    lut = np.arange(MAX_LABEL, dtype=np.int16)
    for left, right in LEFT_RIGHT_PAIRS:
        lut[left], lut[right] = right, left
    return lut


def check_subject(subject: int, split: str) -> None:
    """Refuse a subject outside 1-20 or a validation subject in a training split."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if subject not in TRAIN_SUBJECTS + VAL_SUBJECTS:
        raise ValueError(f"subject must be in 1-20, got {subject}")
    if split == "train" and subject in VAL_SUBJECTS:
        raise ValueError(
            f"subject {subject} is a validation subject (17-20) and may not be used for training"
        )
    if split == "val" and subject in TRAIN_SUBJECTS:
        raise ValueError(f"subject {subject} is a training subject (1-16), not a validation one")


@dataclass(frozen=True)
class Subject:
    """One cropped label map on a 1 mm grid.

    ``labels[k, j, i]`` with ``affine`` mapping (k, j, i, 1) to LPS mm; ``mars``
    holds the MARS category of every parenchyma voxel (0 elsewhere).
    """

    number: int
    labels: npt.NDArray[np.int16]
    mars: npt.NDArray[np.int8]
    affine: npt.NDArray[np.float64]
    pitch_deg: float = 0.0  # head pitch: angle of the eyes -> cerebellum line (LPS y-z plane)

    @property
    def brain_mask(self) -> npt.NDArray[np.bool_]:
        return np.isin(self.labels, PARENCHYMA)


def _read_label_map(path: str) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.float64]]:
    import SimpleITK as sitk

    image = sitk.ReadImage(path)
    array = np.rint(sitk.GetArrayFromImage(image)).astype(np.int16)
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.array(image.GetSpacing(), dtype=np.float64)
    affine = np.eye(4)
    # SimpleITK index (x, y, z) = array (i, j, k): reverse the columns to (k, j, i).
    affine[:3, :3] = (direction * spacing)[:, ::-1]
    affine[:3, 3] = image.GetOrigin()
    return array, affine


def _mars_map(labels: npt.NDArray[np.int16]) -> npt.NDArray[np.int8]:
    """MARS category per voxel.

    Cerebral white matter is lobar when closer to cortex than to deep grey matter or ventricles.
    """
    mars = np.zeros(labels.shape, dtype=np.int8)
    mars[np.isin(labels, LOBAR_GREY)] = MARS_LOBAR
    mars[np.isin(labels, DEEP_GREY)] = MARS_DEEP
    mars[np.isin(labels, INFRATENTORIAL)] = MARS_INFRA
    wm = np.isin(labels, WM)
    d_cortex = ndi.distance_transform_edt(~np.isin(labels, CORTEX))
    d_deep = ndi.distance_transform_edt(~np.isin(labels, (*DEEP_GREY, *VENTRICLES)))
    juxtacortical = d_cortex <= d_deep
    mars[wm & juxtacortical] = MARS_LOBAR
    mars[wm & ~juxtacortical] = MARS_DEEP
    return mars


def brain_box(
    labels: npt.NDArray[np.integer], margin: int
) -> tuple[npt.NDArray[np.int_], npt.NDArray[np.int_]]:
    """Index bounds ``[lo, hi)`` of the parenchyma plus ``margin`` voxels, clipped to the map."""
    brain = np.argwhere(np.isin(labels, PARENCHYMA))
    lo = np.maximum(brain.min(0) - margin, 0)
    hi = np.minimum(brain.max(0) + margin + 1, labels.shape)
    return lo, hi


# All 20 subjects fit (~30 MB each): pools cycle through the subjects, so a
# smaller cache would never hit and every case would pay ~5 s to reload.
@functools.lru_cache(maxsize=20)
def load_subject(number: int, margin_mm: int = 20) -> Subject:
    """Load subject ``number`` (1-20), cropped to the brain plus ``margin_mm`` (skull, scalp)."""
    if number not in TRAIN_SUBJECTS + VAL_SUBJECTS:
        raise ValueError(f"subject must be in 1-20, got {number}")
    path = (
        shared_data_dir()
        / "synthseg"
        / "data"
        / "training_label_maps"
        / f"training_seg_{number:02d}.nii.gz"
    )
    if not path.is_file():
        raise FileNotFoundError(f"label map {path} is missing (see the shared data README)")
    labels, affine = _read_label_map(str(path))
    lo, hi = brain_box(labels, margin_mm)
    labels = np.ascontiguousarray(labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
    affine = affine.copy()
    affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return Subject(
        number=number,
        labels=labels,
        mars=_mars_map(labels),
        affine=affine,
        pitch_deg=_pitch_deg(labels, affine),
    )


TYPICAL_PITCH_DEG = -5.0  # most of the 20 maps lie within -13..+4 deg; subject 1 is at -32


def _pitch_deg(labels: npt.NDArray[np.int16], affine: npt.NDArray[np.float64]) -> float:
    """Head pitch from the eyes -> cerebellum line, so that axial slices can be planned
    the way a radiographer does (roughly along AC-PC) whatever the map's own orientation."""

    def centroid(values: tuple[int, ...]) -> npt.NDArray[np.float64] | None:
        pts = np.argwhere(np.isin(labels[::2, ::2, ::2], values)) * 2
        return None if len(pts) == 0 else pts.mean(0) @ affine[:3, :3].T + affine[:3, 3]

    eyes, cerebellum = centroid((506,)), centroid((8, 47))
    if eyes is None or cerebellum is None:
        return TYPICAL_PITCH_DEG
    v = cerebellum - eyes
    return float(np.degrees(np.arctan2(v[2], v[1])))
