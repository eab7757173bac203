"""One geometric stack of MR images (`Series`) and the study that holds it (`Study`).

A `Series` is what the pipeline analyses: a DICOM series, or one echo / one
image kind (magnitude vs phase frames) of it when a vendor stores several in
one series.  It knows where each slice lives (file, zip member, frame of an
Enhanced MR file) and builds the `Volume` on demand: slices sorted by their
position along the plane normal (never by InstanceNumber), rescaled to
float32, with the geometry checked first (`StackGeometry`).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from model.errors import GeometryError, InputError
from model.types import SeriesInfo, SliceRef, Volume

__all__ = [
    "FrameRef",
    "Series",
    "SourceRef",
    "StackGeometry",
    "Study",
    "has_dicm_prefix",
    "parse_dicom",
    "stack_geometry",
]

# Tolerances of the geometry checks (mm unless stated).
ORIENTATION_TOL = 1e-3  # difference of direction cosines
SPACING_REL_TOL = 0.02  # relative deviation of one slice gap from the median gap
SPACING_ABS_TOL = 0.01
IN_PLANE_SHIFT_TOL = 0.05  # slices must stack along the normal (mm, or 5 % of a pixel)


@dataclass(frozen=True)
class SourceRef:
    """Where a DICOM object is stored: a file, or a member of a zip archive."""

    path: Path
    member: str | None = None

    def __str__(self) -> str:
        return f"{self.path}!{self.member}" if self.member else str(self.path)

    def read_bytes(self) -> bytes:
        """The raw bytes of the object; `InputError` when the file or member is unreadable."""
        try:
            if self.member is None:
                return self.path.read_bytes()
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self.member)
        except (OSError, zipfile.BadZipFile, KeyError) as e:
            raise InputError(f"{self}: cannot read ({e})") from e

    def read(self, *, stop_before_pixels: bool = False) -> Dataset:
        """The dataset; `InputError` naming the file when it cannot be parsed."""
        try:
            return parse_dicom(self.read_bytes(), stop_before_pixels=stop_before_pixels)
        except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as e:
            raise InputError(f"{self}: cannot read DICOM ({e})") from e


def has_dicm_prefix(data: bytes) -> bool:
    """Part 10 file: 128-byte preamble then ``DICM``."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def parse_dicom(data: bytes, *, stop_before_pixels: bool = False) -> Dataset:
    """Parse a Part 10 file, or a bare dataset (no preamble/meta) starting with group 0008.

    Old exports without the file meta header are implicit VR little endian
    (the DICOM default); their transfer syntax is recorded so that pydicom's
    pixel handlers can decode them.
    """
    bare = not has_dicm_prefix(data) and data[:2] == b"\x08\x00"
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels, force=bare)
    if bare and "TransferSyntaxUID" not in ds.file_meta:
        implicit = ds.original_encoding[0] is not False
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        )
    return ds


@dataclass(frozen=True)
class FrameRef:
    """One 2D image of a stack: its source, geometry and rescale."""

    source: SourceRef
    frame_index: int | None  # 0-based frame of a multi-frame object; None for classic
    sop_instance_uid: str
    sop_class_uid: str
    position: tuple[float, float, float]  # ImagePositionPatient
    orientation: tuple[float, float, float, float, float, float]  # ImageOrientationPatient
    pixel_spacing: tuple[float, float]  # (between rows, between columns)
    rows: int
    columns: int
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None


@dataclass(frozen=True)
class StackGeometry:
    """The validated grid of a stack: slice order and the (k, j, i) -> LPS affine."""

    order: tuple[int, ...]  # indices into Series.frames, sorted along the normal
    affine: npt.NDArray[np.float64]
    slice_spacing: float
    shape: tuple[int, int, int]


def _fmt(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".")


def stack_geometry(frames: Sequence[FrameRef], name: str) -> StackGeometry:
    """Sort ``frames`` along the normal and check that they form one regular grid.

    Raises `GeometryError` (naming ``name``) for mixed image sizes, mixed
    orientations, mixed pixel spacing, duplicate positions, slices not
    stacked along the normal, a missing slice, or uneven spacing.
    """
    if not frames:
        raise GeometryError(f"{name}: no image slices")
    sizes = {(f.rows, f.columns) for f in frames}
    if len(sizes) > 1:
        raise GeometryError(f"{name}: mixed image sizes {sorted(sizes)} in one series")
    iops = np.array([f.orientation for f in frames], dtype=np.float64)
    if np.max(np.abs(iops - iops[0])) > ORIENTATION_TOL:
        n_orient = len({tuple(np.round(o, 2)) for o in iops})
        raise GeometryError(
            f"{name}: mixed orientations ({n_orient} different ImageOrientationPatient values) "
            "in one series"
        )
    spacings = np.array([f.pixel_spacing for f in frames], dtype=np.float64)
    if np.max(np.abs(spacings - spacings[0])) > 1e-3:
        raise GeometryError(f"{name}: mixed pixel spacing in one series")
    row_cos, col_cos = iops[0, :3], iops[0, 3:]
    if abs(np.linalg.norm(row_cos) - 1) > 1e-2 or abs(np.linalg.norm(col_cos) - 1) > 1e-2:
        raise GeometryError(f"{name}: ImageOrientationPatient is not made of unit vectors")
    if abs(float(row_cos @ col_cos)) > 1e-2:
        raise GeometryError(f"{name}: ImageOrientationPatient row and column are not orthogonal")
    normal = np.cross(row_cos, col_cos)
    normal /= np.linalg.norm(normal)
    positions = np.array([f.position for f in frames], dtype=np.float64)
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    dist, positions = dist[order], positions[order]
    dr, dc = float(spacings[0, 0]), float(spacings[0, 1])
    n = len(frames)
    if n == 1:
        step_len = frames[0].spacing_between_slices or frames[0].slice_thickness or 1.0
        step = normal * float(step_len)
    else:
        gaps = np.diff(dist)
        if np.min(gaps) < max(SPACING_ABS_TOL, 1e-3 * float(np.median(gaps))):
            k = int(np.argmin(gaps))
            raise GeometryError(
                f"{name}: two slices at the same position ({_fmt(dist[k])} mm along the normal); "
                "duplicate images, or several echoes/kinds that could not be told apart"
            )
        in_plane = positions - np.outer(dist, normal)
        shift = np.max(np.linalg.norm(in_plane - in_plane[0], axis=1))
        if shift > max(IN_PLANE_SHIFT_TOL, 0.05 * min(dr, dc)):
            raise GeometryError(
                f"{name}: slices are not stacked along the plane normal (in-plane shift "
                f"{_fmt(shift)} mm: tilted or sheared stack)"
            )
        median = float(np.median(gaps))
        tol = max(SPACING_ABS_TOL, SPACING_REL_TOL * median)
        bad = np.nonzero(np.abs(gaps - median) > tol)[0]
        if bad.size:
            k = int(bad[0])
            ratio = gaps[k] / median
            if abs(ratio - round(ratio)) * median <= tol and round(ratio) >= 2:
                missing = round(ratio) - 1
                raise GeometryError(
                    f"{name}: missing slice(s): gap of {_fmt(gaps[k])} mm between slices at "
                    f"{_fmt(dist[k])} and {_fmt(dist[k + 1])} mm along the normal where "
                    f"{_fmt(median)} mm is expected ({missing} slice(s) missing)"
                )
            raise GeometryError(
                f"{name}: uneven slice spacing: gap of {_fmt(gaps[k])} mm between slices at "
                f"{_fmt(dist[k])} and {_fmt(dist[k + 1])} mm, median {_fmt(median)} mm "
                f"(tolerance {_fmt(tol)} mm)"
            )
        step = (positions[-1] - positions[0]) / (n - 1)
    affine = np.eye(4)
    affine[:3, 0] = step
    affine[:3, 1] = col_cos * dr
    affine[:3, 2] = row_cos * dc
    affine[:3, 3] = positions[0]
    return StackGeometry(
        order=tuple(int(i) for i in order),
        affine=affine,
        slice_spacing=float(np.linalg.norm(step)),
        shape=(n, frames[0].rows, frames[0].columns),
    )


@dataclass
class Series:
    """One geometric stack: a DICOM series, or one echo / image kind of it.

    ``stack_id`` is the SeriesInstanceUID, suffixed (``#echo2``, ``#phase``,
    ``#fieldmap``...) when the series had to be split into several stacks.
    """

    info: SeriesInfo
    stack_id: str
    frames: list[FrameRef] = field(default_factory=list, repr=False)
    classification_reason: str = ""
    nifti_path: Path | None = None
    _geometry: StackGeometry | None = field(default=None, init=False, repr=False)

    @property
    def series_instance_uid(self) -> str:
        return self.info.series_instance_uid

    @property
    def label(self) -> str:
        """How error messages and reasons name this stack."""
        number = f"{self.info.series_number} " if self.info.series_number is not None else ""
        desc = f"'{self.info.series_description}' " if self.info.series_description else ""
        return f"series {number}{desc}({self.stack_id})"

    def geometry(self) -> StackGeometry:
        """The validated grid (from headers only; no pixel data is read)."""
        if self._geometry is None:
            self._geometry = stack_geometry(self.frames, self.label)
        return self._geometry

    def load_volume(self) -> Volume:
        """The stack as a float32 `Volume` in LPS, slices sorted along the normal."""
        if self.nifti_path is not None:
            from model.volume import read_nifti

            vol = read_nifti(self.nifti_path)
            return Volume(
                array=vol.array,
                affine=vol.affine,
                study_instance_uid=self.info.study_instance_uid,
                series_instance_uid=self.info.series_instance_uid,
            )
        geo = self.geometry()
        array = np.empty(geo.shape, dtype=np.float32)
        cache: dict[SourceRef, npt.NDArray[np.generic]] = {}
        for k, index in enumerate(geo.order):
            frame = self.frames[index]
            pixels = self._pixels(frame, cache)
            array[k] = pixels.astype(np.float32) * np.float32(frame.rescale_slope) + np.float32(
                frame.rescale_intercept
            )
        slices = tuple(
            SliceRef(
                sop_instance_uid=self.frames[i].sop_instance_uid,
                sop_class_uid=self.frames[i].sop_class_uid,
                frame_number=None
                if self.frames[i].frame_index is None
                else self.frames[i].frame_index + 1,  # type: ignore[operator]
            )
            for i in geo.order
        )
        return Volume(
            array=array,
            affine=geo.affine,
            study_instance_uid=self.info.study_instance_uid,
            series_instance_uid=self.info.series_instance_uid,
            slices=slices,
        )

    def _pixels(
        self, frame: FrameRef, cache: dict[SourceRef, npt.NDArray[np.generic]]
    ) -> npt.NDArray[np.generic]:
        if frame.source not in cache:
            ds = frame.source.read()
            try:
                arr = np.asarray(ds.pixel_array)
            except Exception as e:  # pydicom raises many types for bad pixel data
                raise InputError(
                    f"{frame.source}: cannot decode pixel data "
                    f"(transfer syntax {ds.file_meta.get('TransferSyntaxUID', '?')}): {e}"
                ) from e
            if frame.frame_index is None:
                # A classic file is read once per slice: do not keep it around.
                if arr.ndim != 2:
                    raise InputError(f"{frame.source}: expected one 2D image, got {arr.shape}")
                return arr
            cache[frame.source] = arr if arr.ndim == 3 else arr[np.newaxis]
        arr = cache[frame.source]
        if frame.frame_index is None or frame.frame_index >= arr.shape[0]:
            raise InputError(f"{frame.source}: frame {frame.frame_index} is missing")
        return arr[frame.frame_index]

    def source_datasets(self) -> list[Dataset]:
        """Full datasets (with pixel data) in slice order; one per multi-frame file."""
        if self.nifti_path is not None:
            return []
        order = self.geometry().order
        seen: set[SourceRef] = set()
        out: list[Dataset] = []
        for index in order:
            source = self.frames[index].source
            if source in seen:
                continue
            seen.add(source)
            out.append(source.read())
        return out


@dataclass
class Study:
    """The stacks of one StudyInstanceUID, plus the objects that were not images."""

    study_instance_uid: str
    series: list[Series] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def find(self, uid: str) -> list[Series]:
        """The stacks whose SeriesInstanceUID or stack id is ``uid``."""
        return [s for s in self.series if uid in (s.stack_id, s.series_instance_uid)]
