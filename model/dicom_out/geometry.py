"""Where each slice of the source grid lives in the source DICOM instances.

``Result.labels`` is a `Volume` on the source grid, indexed ``[k, j, i]``.
Writers need the same data *per source frame*, in the source's own row/column
layout: the SEG's frames must correspond pixel for pixel to the frames they
reference, the SR's image coordinates are (column, row) of one source frame,
and key images show source frames as the scanner stored them.

Nothing here trusts an assumed correspondence (``array[k]`` = ``datasets[k]``,
rows = rows): every source frame's Image Position/Orientation and Pixel
Spacing are mapped through the inverse of the volume's affine, and the frame
is accepted only if it lands on one integer slice with its rows and columns
along (possibly reversed, possibly swapped) volume axes.  That makes
feet-first, negated-cosine, swapped-axis and multi-frame sources land on the
right voxels by construction, and a mismatch is a loud `GeometryError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from model.errors import GeometryError
from model.types import Volume

__all__ = ["SourceFrame", "SourceLayout"]

_TOL = 0.1  # voxel fractions: how far off-grid a source frame may be


def _is_multiframe(ds: Dataset) -> bool:
    return int(ds.get("NumberOfFrames", 1) or 1) > 1 or "PerFrameFunctionalGroupsSequence" in ds


def _frame_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The functional-group item ``sequence`` for 1-based ``frame`` (per-frame, else shared)."""
    for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        if groups not in ds:
            continue
        seq = ds[groups].value
        item = seq[frame - 1] if groups.startswith("PerFrame") else seq[0]
        if sequence in item and len(item[sequence].value) > 0:
            return item[sequence].value[0]  # type: ignore[no-any-return,unused-ignore]
    return None


def _spatial(
    ds: Dataset, frame: int | None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], tuple[float, float]]:
    """(ImagePositionPatient, ImageOrientationPatient, PixelSpacing) of one frame."""
    if frame is None:
        src: Dataset | None = ds
        pos_src, ori_src, meas_src = src, src, src
    else:
        pos_src = _frame_item(ds, frame, "PlanePositionSequence")
        ori_src = _frame_item(ds, frame, "PlaneOrientationSequence")
        meas_src = _frame_item(ds, frame, "PixelMeasuresSequence")
    try:
        ipp = np.asarray([float(v) for v in pos_src.ImagePositionPatient])  # type: ignore[union-attr]
        iop = np.asarray([float(v) for v in ori_src.ImageOrientationPatient])  # type: ignore[union-attr]
        ps = meas_src.PixelSpacing  # type: ignore[union-attr]
    except (AttributeError, TypeError) as e:
        where = f"frame {frame} of " if frame else ""
        raise GeometryError(
            f"{where}instance {ds.get('SOPInstanceUID', '?')} lacks image plane attributes "
            "(ImagePositionPatient/ImageOrientationPatient/PixelSpacing)"
        ) from e
    return ipp, iop, (float(ps[0]), float(ps[1]))


@dataclass(frozen=True)
class SourceFrame:
    """One source frame and its place on the volume grid.

    Pixel ``(row r, column c)`` of this frame is voxel
    ``origin + r * row_step + c * col_step`` of the volume, (k, j, i) integers.
    """

    dataset: Dataset
    frame_number: int | None  # 1-based for multi-frame instances
    plane_index: int  # index of this frame among highdicom's source planes
    k: int
    origin: tuple[int, int, int]
    row_step: tuple[int, int, int]
    col_step: tuple[int, int, int]
    rows: int
    columns: int
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    def take(self, array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        """This frame's pixels out of a volume-grid array ``[k, j, i]``."""
        r = np.arange(self.rows)[:, None]
        c = np.arange(self.columns)[None, :]
        idx = [self.origin[a] + r * self.row_step[a] + c * self.col_step[a] for a in range(3)]
        return array[idx[0], idx[1], idx[2]]

    def pixel_of(self, volume: Volume, lps: Sequence[float]) -> tuple[float, float]:
        """Continuous (row, column) of an LPS point projected onto this frame."""
        kji = volume.lps_to_index(np.asarray(lps, dtype=np.float64)) - np.asarray(self.origin)
        m = np.stack([np.asarray(self.row_step), np.asarray(self.col_step)], axis=1)
        rc, *_ = np.linalg.lstsq(m.astype(np.float64), kji, rcond=None)
        return float(rc[0]), float(rc[1])


class SourceLayout:
    """The source frames that make up a volume, in the order highdicom expects.

    ``datasets`` is what to pass as ``source_images``; ``planes`` is the number
    of planes highdicom derives from them (instances for single-frame sources,
    frames for one multi-frame instance); ``frames`` are those planes that belong
    to the volume (a multi-frame file may also hold phase or other echoes).
    """

    def __init__(self, volume: Volume, source_datasets: Sequence[Dataset]) -> None:
        if not source_datasets:
            raise GeometryError("no source DICOM instances were given for the result's series")
        self.volume = volume
        self._inv = np.linalg.inv(volume.affine)
        multi = [ds for ds in source_datasets if _is_multiframe(ds)]
        used = {(s.sop_instance_uid, s.frame_number) for s in volume.slices}
        self.multiframe = bool(multi)
        if self.multiframe:
            if len(source_datasets) != 1:
                raise GeometryError(
                    "expected exactly one multi-frame instance for an enhanced source series, "
                    f"got {len(source_datasets)} instances"
                )
            ds = source_datasets[0]
            self.datasets: list[Dataset] = [ds]
            n = int(ds.get("NumberOfFrames", 1))
            self.planes = n
            candidates: list[tuple[Dataset, int | None, int]] = [
                (ds, f, f - 1) for f in range(1, n + 1)
            ]
            if used:
                candidates = [c for c in candidates if (str(ds.SOPInstanceUID), c[1]) in used]
        else:
            uids = [s.sop_instance_uid for s in volume.slices]
            by_uid = {str(ds.SOPInstanceUID): ds for ds in source_datasets}
            if uids and all(u in by_uid for u in uids):
                ordered = [by_uid[u] for u in uids]
            elif uids:
                missing = next(u for u in uids if u not in by_uid)
                raise GeometryError(f"source instance {missing} of the volume was not given")
            else:
                ordered = list(source_datasets)
            self.datasets = ordered
            self.planes = len(ordered)
            candidates = [(ds, None, p) for p, ds in enumerate(ordered)]
        self.frames: list[SourceFrame] = [self._locate(*c) for c in candidates]
        if not self.frames:
            raise GeometryError("none of the source frames belongs to the result's volume")
        self._by_k: dict[int, SourceFrame] = {}
        for fr in self.frames:
            self._by_k.setdefault(fr.k, fr)
        missing_k = sorted(set(range(volume.shape[0])) - set(self._by_k))
        if missing_k:
            raise GeometryError(
                f"volume slices {missing_k[:5]} have no source frame among the given instances"
            )

    def _to_index(self, lps: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return self._inv[:3, :3] @ lps + self._inv[:3, 3]

    def _locate(self, ds: Dataset, frame: int | None, plane_index: int) -> SourceFrame:
        ipp, iop, (dr, dc) = _spatial(ds, frame)
        origin = self._to_index(ipp)
        col_step = self._inv[:3, :3] @ (iop[:3] * dc)  # one column to the right
        row_step = self._inv[:3, :3] @ (iop[3:] * dr)  # one row down
        where = f"frame {frame} of {ds.SOPInstanceUID}" if frame else str(ds.SOPInstanceUID)
        rounded = []
        for name, vec in (("origin", origin), ("row step", row_step), ("column step", col_step)):
            r = np.round(vec)
            if np.max(np.abs(vec - r)) > _TOL:
                raise GeometryError(
                    f"source {where} is not on the result's voxel grid ({name} = {vec.round(3)})"
                )
            rounded.append(tuple(int(x) for x in r))
        o, rs, cs = rounded
        if sorted(map(abs, rs)) != [0, 0, 1] or sorted(map(abs, cs)) != [0, 0, 1] or rs[0] or cs[0]:
            raise GeometryError(f"source {where} is not a plane of the result's volume")
        rows, cols = int(ds.Rows), int(ds.Columns)
        shape = self.volume.shape
        for corner_r, corner_c in ((0, 0), (rows - 1, cols - 1)):
            idx = [o[a] + corner_r * rs[a] + corner_c * cs[a] for a in range(3)]
            if not all(0 <= idx[a] < shape[a] for a in range(3)):
                raise GeometryError(f"source {where} extends outside the result's volume")
        return SourceFrame(
            dataset=ds,
            frame_number=frame,
            plane_index=plane_index,
            k=o[0],
            origin=o,  # type: ignore[arg-type]
            row_step=rs,  # type: ignore[arg-type]
            col_step=cs,  # type: ignore[arg-type]
            rows=rows,
            columns=cols,
            position=(float(ipp[0]), float(ipp[1]), float(ipp[2])),
            orientation=tuple(float(v) for v in iop),
            pixel_spacing=(dr, dc),
        )

    def frame_at(self, k: int) -> SourceFrame:
        """The source frame of volume slice ``k``."""
        return self._by_k[k]

    def frame_through(self, lps: Sequence[float]) -> SourceFrame:
        """The source frame whose plane is nearest to an LPS point."""
        k = float(self.volume.lps_to_index(np.asarray(lps, dtype=np.float64))[0])
        kk = min(max(round(k), 0), self.volume.shape[0] - 1)
        return self._by_k[kk]

    def planes_array(self, array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        """A ``[plane, row, column]`` array for highdicom: volume data in source layout.

        Planes of the source that are not part of the volume (other image kinds
        in a multi-frame file) are zero, so highdicom omits them as empty frames.
        """
        first = self.frames[0]
        out = np.zeros((self.planes, first.rows, first.columns), dtype=array.dtype)
        for fr in self.frames:
            out[fr.plane_index] = fr.take(array)
        return out
