"""A CMB's LPS centre must land on the right SEG frame and pixel, whatever the source geometry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from model.dicom_out import write_outputs
from model.dicom_out.geometry import SourceLayout
from model.errors import GeometryError
from model.types import Volume
from tests.model.dicom_out.conftest import Case

GEOMETRIES = ["axial", "feet_first", "negated", "oblique", "sagittal"]


def _frame_geometry(seg: pydicom.Dataset, f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shared = seg.SharedFunctionalGroupsSequence[0]
    per = seg.PerFrameFunctionalGroupsSequence[f]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    ps = np.array(shared.PixelMeasuresSequence[0].PixelSpacing, float)
    ipp = np.array(per.PlanePositionSequence[0].ImagePositionPatient, float)
    return ipp, iop, ps


def assert_centres_land_in_segments(case: Case, seg_path: Path) -> None:
    seg = pydicom.dcmread(seg_path)
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    thickness = float(seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness)
    kept = sorted((d for d in case.result.detections if d.kept), key=lambda d: d.id)
    for number, det in enumerate(kept, start=1):
        centre = np.array(det.center_lps_mm)
        hits = []
        for f in range(int(seg.NumberOfFrames)):
            per = seg.PerFrameFunctionalGroupsSequence[f]
            if per.SegmentIdentificationSequence[0].ReferencedSegmentNumber != number:
                continue
            ipp, iop, ps = _frame_geometry(seg, f)
            normal = np.cross(iop[:3], iop[3:])
            if abs(float((centre - ipp) @ normal)) > thickness / 2:
                continue
            col = float((centre - ipp) @ iop[:3]) / ps[1]
            row = float((centre - ipp) @ iop[3:]) / ps[0]
            hits.append((f, round(row), round(col)))
        assert len(hits) == 1, f"CMB {number}: {len(hits)} SEG frames through its centre"
        f, row, col = hits[0]
        assert pixels[f, row, col] == 1, f"CMB {number} centre is not inside its segment"
        # and the frame references the source instance at that position
        ref = seg.PerFrameFunctionalGroupsSequence[f].DerivationImageSequence[0]
        src = ref.SourceImageSequence[0]
        k = case.centres_kji[det.id][0]
        expected = case.result.labels.slices[k]
        assert src.ReferencedSOPInstanceUID == expected.sop_instance_uid
        if expected.frame_number is not None:
            assert int(src.ReferencedFrameNumber) == expected.frame_number


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_centre_lands_in_seg_frame(
    make_case: Callable[..., Case], tmp_path: Path, geometry: str
) -> None:
    case = make_case(geometry)
    out = write_outputs(case.result, case.datasets, tmp_path / "out", ("seg",))
    assert_centres_land_in_segments(case, out["seg"])  # type: ignore[arg-type]


@pytest.mark.parametrize("geometry", ["axial", "oblique"])
def test_enhanced_multiframe_source(
    make_case: Callable[..., Case], tmp_path: Path, geometry: str
) -> None:
    case = make_case(geometry, enhanced=True)
    assert len(case.datasets) == 1 and int(case.datasets[0].NumberOfFrames) == 10
    out = write_outputs(case.result, case.datasets, tmp_path / "out", ("seg",))
    assert_centres_land_in_segments(case, out["seg"])  # type: ignore[arg-type]


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, RLELossless])
def test_compressed_source(make_case: Callable[..., Case], tmp_path: Path, syntax: str) -> None:
    case = make_case("feet_first", transfer_syntax=syntax)
    assert case.datasets[0].file_meta.TransferSyntaxUID == syntax
    out = write_outputs(case.result, case.datasets, tmp_path / "out", ("seg", "sc"))
    assert_centres_land_in_segments(case, out["seg"])  # type: ignore[arg-type]
    assert len(out["sc"]) == 2  # type: ignore[arg-type]  # key images decode the source


def test_source_order_does_not_matter(axial_case: Case, tmp_path: Path) -> None:
    shuffled = list(reversed(axial_case.datasets))
    out = write_outputs(axial_case.result, shuffled, tmp_path / "out", ("seg",))
    assert_centres_land_in_segments(axial_case, out["seg"])  # type: ignore[arg-type]


def test_layout_maps_swapped_axes(axial_case: Case) -> None:
    """A volume whose in-plane axes are swapped/reversed relative to the source still maps."""
    vol = axial_case.result.labels
    a = vol.affine.copy()
    nj = vol.shape[1]
    # new array[k, i, j'] with j' reversed: same voxels in patient space
    arr = np.ascontiguousarray(vol.array.transpose(0, 2, 1)[:, :, ::-1])
    b = a.copy()
    b[:3, 1] = a[:3, 2]
    b[:3, 2] = -a[:3, 1]
    b[:3, 3] = a[:3, 3] + (nj - 1) * a[:3, 1]
    swapped = Volume(array=arr, affine=b, slices=vol.slices)
    layout = SourceLayout(swapped, axial_case.datasets)
    for k in range(vol.shape[0]):
        np.testing.assert_array_equal(layout.frame_at(k).take(arr), vol.array[k])


def test_layout_refuses_foreign_grid(axial_case: Case) -> None:
    vol = axial_case.result.labels
    a = vol.affine.copy()
    a[:3, 3] += np.array([0.3, 0.0, 0.0])  # a third of a voxel off
    with pytest.raises(GeometryError, match="not on the result's voxel grid"):
        SourceLayout(Volume(array=vol.array, affine=a, slices=vol.slices), axial_case.datasets)
