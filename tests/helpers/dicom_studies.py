"""Small synthetic MR volumes and vendor-flavoured studies for the reader/selection tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from model.series_writer import StudyMeta, deterministic_uid, write_series
from model.types import Volume


def rotation(axis: str, degrees: float) -> npt.NDArray[np.float64]:
    """A 3x3 rotation about the LPS x, y or z axis."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def affine_from(
    row_cos: npt.ArrayLike,
    col_cos: npt.ArrayLike,
    spacing: tuple[float, float, float],
    origin: npt.ArrayLike,
    slice_sign: float = 1.0,
) -> npt.NDArray[np.float64]:
    """(k, j, i) -> LPS affine for rows along ``row_cos``, columns along ``col_cos``.

    ``spacing`` is (slice, row, column) spacing; ``slice_sign`` -1 stacks the
    slices against the right-handed normal (as some exports do).
    """
    r = np.asarray(row_cos, dtype=np.float64)
    c = np.asarray(col_cos, dtype=np.float64)
    n = np.cross(r, c)
    a = np.eye(4)
    a[:3, 0] = slice_sign * n * spacing[0]
    a[:3, 1] = c * spacing[1]
    a[:3, 2] = r * spacing[2]
    a[:3, 3] = np.asarray(origin, dtype=np.float64)
    return a


ORIENTATIONS: dict[str, npt.NDArray[np.float64]] = {
    # Head-first supine axial: rows run to patient left, columns to posterior.
    "axial": affine_from([1, 0, 0], [0, 1, 0], (2.0, 0.9, 0.8), [-12.0, -15.0, -20.0]),
    # Feet-first supine axial as scanners store it: negated row cosine, slices head-to-feet.
    "feet_first": affine_from(
        [-1, 0, 0], [0, 1, 0], (2.5, 1.0, 1.0), [14.0, -15.0, 30.0], slice_sign=1.0
    ),
    # Double-oblique: rotated 17 degrees about x then 11 about z.
    "oblique": affine_from(
        rotation("z", 11) @ rotation("x", 17) @ np.array([1.0, 0, 0]),
        rotation("z", 11) @ rotation("x", 17) @ np.array([0, 1.0, 0]),
        (1.5, 0.9, 0.9),
        [-10.0, 5.0, 12.0],
    ),
    # Sagittal with negated cosines (rows to anterior, columns to feet).
    "sagittal_negated": affine_from([0, -1, 0], [0, 0, -1], (1.2, 1.0, 1.0), [-5.0, 20.0, 40.0]),
}


def make_volume(
    orientation: str = "axial",
    shape: tuple[int, int, int] = (10, 32, 32),
    seed: int = 0,
    integer: bool = True,
) -> Volume:
    """A random volume on one of the `ORIENTATIONS` grids (values 0..4000)."""
    rng = np.random.default_rng(seed)
    array = rng.uniform(0, 4000, size=shape)
    if integer:
        array = np.round(array)
    return Volume(array=array.astype(np.float32), affine=ORIENTATIONS[orientation].copy())


@dataclass
class WrittenStudy:
    """A generated study: where its files are and which series is which."""

    root: Path
    study: StudyMeta
    series_uids: dict[str, str] = field(default_factory=dict)  # role -> SeriesInstanceUID
    files: dict[str, list[Path]] = field(default_factory=dict)


# (role, flavour, kind) of the distractors that every vendor study carries.
DISTRACTORS: tuple[tuple[str, str, str], ...] = (
    ("t1", "siemens_t1", "magnitude"),
    ("flair", "siemens_flair", "magnitude"),
    ("localizer", "localizer", "magnitude"),
)


def write_vendor_study(
    root: Path, flavour: str, seed: int = 0, shape: tuple[int, int, int] = (10, 32, 32)
) -> WrittenStudy:
    """A study with the flavour's magnitude series plus phase, minIP, MIP, T1, FLAIR, localizer."""
    study = StudyMeta.synthetic(seed)
    written = WrittenStudy(root=root, study=study)
    roles: list[tuple[str, str, str]] = [
        ("target", flavour, "magnitude"),
        ("phase", flavour, "phase"),
        ("minip", flavour, "minip"),
        ("mip", flavour, "mip"),
        *DISTRACTORS,
    ]
    for number, (role, fl, kind) in enumerate(roles, start=1):
        volume = make_volume("axial", shape=shape, seed=seed + number)
        if role == "localizer":
            volume = make_volume("axial", shape=(3, 32, 32), seed=seed + number)
        uid = deterministic_uid("test-series", seed, role)
        written.series_uids[role] = uid
        written.files[role] = write_series(
            volume,
            root / role,
            flavour=fl,
            kind=kind,
            study=study,
            series_number=number,
            series_instance_uid=uid,
            seed=seed + number,
        )
    return written
