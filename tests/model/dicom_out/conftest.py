"""Tiny source series (written with model.series_writer) and hand-built Results.

A source is 10 slices of 40 x 36 pixels, 0.9 x 0.8 mm in plane, 2 mm apart,
in one of several geometries; three CMBs (two kept, one rejected) are small
balls in ``Result.labels`` at known voxels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from model.series_writer import StudyMeta, write_series
from model.types import (
    Detection,
    MarsCategory,
    ModelInfo,
    Result,
    SequenceKind,
    SeriesInfo,
    SeriesSelection,
    SliceRef,
    Volume,
)

SHAPE = (10, 40, 36)  # k, j, i


def _rotation(axis: str, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def affine_for(geometry: str) -> np.ndarray:
    """(k, j, i) -> LPS affine for a named test geometry."""
    spacing = np.array([2.0, 0.9, 0.8])  # slice, row, column
    # Axial head-first: columns along +x (L), rows along +y (P), slices along +z (S).
    axes = np.eye(3)[:, [2, 1, 0]]  # columns: slice dir, row dir, col dir
    if geometry == "feet_first":
        axes[:, 0] = -axes[:, 0]  # slices stacked towards the feet
    elif geometry == "negated":
        axes[:, 1] = -axes[:, 1]  # rows run anterior, columns run right
        axes[:, 2] = -axes[:, 2]
    elif geometry == "oblique":
        axes = _rotation("x", 17.0) @ _rotation("z", 9.0) @ axes
    elif geometry == "sagittal":
        axes = np.stack([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]], axis=1)
    a = np.eye(4)
    a[:3, :3] = axes * spacing
    a[:3, 3] = [-14.0, -20.0, 30.0]
    return a


def ball(shape: tuple[int, int, int], centre: tuple[int, int, int], radius: float) -> np.ndarray:
    kk, jj, ii = np.indices(shape)
    k, j, i = centre
    # slices are 2 mm apart, rows/columns ~0.85 mm: scale the slice axis
    d2 = ((kk - k) * 2.0) ** 2 + ((jj - j) * 0.9) ** 2 + ((ii - i) * 0.8) ** 2
    return d2 <= radius**2


@dataclass
class Case:
    result: Result
    datasets: list[pydicom.FileDataset]
    files: list[Path]
    centres_kji: dict[int, tuple[int, int, int]]


CMBS = {  # id: (centre k, j, i), mars, lobe, hemisphere, region, status
    1: ((4, 12, 10), MarsCategory.LOBAR, "frontal", "left", "ctx-lh-superiorfrontal", None),
    2: ((6, 25, 24), MarsCategory.DEEP, None, "right", "Right-Thalamus", None),
    3: ((2, 30, 8), MarsCategory.LOBAR, "occipital", "left", "ctx-lh-lateraloccipital", "vessel"),
}


def build_case(
    tmp: Path,
    geometry: str = "axial",
    *,
    enhanced: bool = False,
    transfer_syntax: str | None = None,
    with_cmbs: bool = True,
    patient_name: str = "CMB^Synthetic",
    rated: bool = False,
) -> Case:
    """``rated``: as if the location filter ran, its definite band at 0.65 (kept CMBs: 0.6, 0.7)."""
    affine = affine_for(geometry)
    rng = np.random.default_rng(0)
    image = (400 + 40 * rng.standard_normal(SHAPE)).clip(0, 4000).astype(np.float32)
    labels = np.zeros(SHAPE, dtype=np.float32)
    detections = []
    centres = {}
    for det_id, (kji, mars, lobe, hemi, region, reject) in CMBS.items():
        if not with_cmbs:
            break
        mask = ball(SHAPE, kji, 2.3)
        labels[mask] = det_id
        image[mask] = 60.0
        centre = tuple(float(x) for x in affine[:3, :3] @ np.array(kji, float) + affine[:3, 3])
        n = int(mask.sum())
        det = Detection(
            id=det_id,
            center_lps_mm=centre,  # type: ignore[arg-type]
            diameter_mm=3.2,
            volume_mm3=round(n * 2.0 * 0.9 * 0.8, 3),
            probability=0.5 + 0.1 * det_id,
            n_voxels=n,
            region=region,
            region_label=1000 + det_id,
            mars=mars,
            lobe=lobe,
            hemisphere=hemi,
        )
        if reject:
            det.reject(reject)
        detections.append(det)
        centres[det_id] = kji
    study = StudyMeta.synthetic(7, patient_name=patient_name)
    volume = Volume(array=image, affine=affine)
    out = tmp / f"src-{geometry}-{enhanced}-{transfer_syntax}"
    kwargs = {"transfer_syntax": transfer_syntax} if transfer_syntax else {}
    files = write_series(
        volume,
        out,
        study=study,
        enhanced=enhanced,
        patient_position="FFS" if geometry == "feet_first" else "HFS",
        **kwargs,  # type: ignore[arg-type]
    )
    datasets = [pydicom.dcmread(f) for f in files]
    first = datasets[0]
    if enhanced:
        slices = tuple(
            SliceRef(str(first.SOPInstanceUID), str(first.SOPClassUID), f + 1)
            for f in range(SHAPE[0])
        )
    else:
        slices = tuple(SliceRef(str(d.SOPInstanceUID), str(d.SOPClassUID)) for d in datasets)
    ident = dict(
        study_instance_uid=str(first.StudyInstanceUID),
        series_instance_uid=str(first.SeriesInstanceUID),
        slices=slices,
    )
    info = SeriesInfo(
        study_instance_uid=str(first.StudyInstanceUID),
        series_instance_uid=str(first.SeriesInstanceUID),
        modality="MR",
        sequence_kind=SequenceKind.SWI,
        series_description=str(first.get("SeriesDescription", "")),
        series_number=1,
        manufacturer="SIEMENS",
        field_strength_t=3.0,
        echo_time_ms=20.0,
        pixel_spacing_mm=(0.9, 0.8),
        slice_thickness_mm=2.0,
        acquisition_type="3D",
        n_instances=len(datasets),
    )
    result = Result(
        study_instance_uid=str(first.StudyInstanceUID),
        series=info,
        selection=SeriesSelection(chosen=info.series_instance_uid, reason="SWI magnitude"),
        detections=detections,
        probability=Volume(array=(labels > 0).astype(np.float32) * 0.8, affine=affine, **ident),  # type: ignore[arg-type]
        labels=Volume(array=labels, affine=affine, **ident),  # type: ignore[arg-type]
        model=ModelInfo(name="cmb-unet", version="1.2.0", sha256="ab" * 32),
        location={"mars_rating": {"definite_probability": 0.65}} if rated else None,
    )
    return Case(result=result, datasets=datasets, files=files, centres_kji=centres)


def result_for_volume(
    volume: Volume,
    info: SeriesInfo,
    centres_kji: dict[int, tuple[int, int, int]],
    radius_mm: float = 2.0,
) -> Result:
    """A Result with kept lobar CMBs (balls of ``radius_mm``) at the given voxels of ``volume``."""
    labels = np.zeros(volume.shape, dtype=np.float32)
    detections = []
    reach = [int(np.ceil(radius_mm / sp)) + 1 for sp in volume.spacing]
    for det_id, kji in centres_kji.items():
        lo = [max(c - r, 0) for c, r in zip(kji, reach, strict=True)]
        hi = [min(c + r + 1, n) for c, r, n in zip(kji, reach, volume.shape, strict=True)]
        box = np.stack(
            np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij"),
            axis=-1,
        )
        offsets = (box - np.asarray(kji)).astype(float)
        dist = np.linalg.norm(offsets @ volume.affine[:3, :3].T, axis=-1)
        mask = np.zeros(volume.shape, dtype=bool)
        mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = dist <= max(
            radius_mm, 0.5 * min(volume.spacing) + 1e-3
        )
        labels[mask] = det_id
        detections.append(
            Detection(
                id=det_id,
                center_lps_mm=tuple(float(x) for x in volume.index_to_lps(kji)),  # type: ignore[arg-type]
                diameter_mm=2 * radius_mm,
                volume_mm3=float(mask.sum() * volume.voxel_volume_mm3),
                probability=0.9,
                n_voxels=int(mask.sum()),
                mars=MarsCategory.LOBAR,
                lobe="parietal",
                hemisphere="left",
            )
        )
    return Result(
        study_instance_uid=volume.study_instance_uid,
        series=info,
        selection=SeriesSelection(chosen=info.series_instance_uid, reason="test"),
        detections=detections,
        probability=volume.with_array((labels > 0).astype(np.float32)),
        labels=volume.with_array(labels),
        model=ModelInfo(name="cmb-unet", version="1.2.0", sha256="ab" * 32),
    )


@pytest.fixture
def make_case(tmp_path: Path) -> Callable[..., Case]:
    def make(geometry: str = "axial", **kwargs: object) -> Case:
        return build_case(tmp_path, geometry, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def axial_case(make_case: Callable[..., Case]) -> Case:
    return make_case("axial")
