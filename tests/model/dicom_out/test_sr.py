"""The SR read back by highdicom: groups, segment references, and markers on the right pixel."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pytest

from model.dicom_out import write_outputs
from model.dicom_out.uids import OutputUids
from tests.model.dicom_out.conftest import Case


def _frame_geometry(ds: object, frame: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if frame is None:
        src = ds
        return (
            np.array(src.ImagePositionPatient, float),  # type: ignore[attr-defined]
            np.array(src.ImageOrientationPatient, float),  # type: ignore[attr-defined]
            np.array(src.PixelSpacing, float),  # type: ignore[attr-defined]
        )
    per = ds.PerFrameFunctionalGroupsSequence[frame - 1]  # type: ignore[attr-defined]
    shared = ds.SharedFunctionalGroupsSequence[0]  # type: ignore[attr-defined]

    def pick(name: str) -> object:
        return (per if name in per else shared)[name].value[0]

    return (
        np.array(pick("PlanePositionSequence").ImagePositionPatient, float),  # type: ignore[attr-defined]
        np.array(pick("PlaneOrientationSequence").ImageOrientationPatient, float),  # type: ignore[attr-defined]
        np.array(pick("PixelMeasuresSequence").PixelSpacing, float),  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize(
    ("geometry", "enhanced"), [("axial", False), ("oblique", False), ("negated", True)]
)
def test_sr_groups_and_markers(
    make_case: Callable[..., Case], tmp_path: Path, geometry: str, enhanced: bool
) -> None:
    case = make_case(geometry, enhanced=enhanced)
    written = write_outputs(case.result, case.datasets, tmp_path, ("seg", "sr"))
    sr = hd.sr.srread(written["sr"])  # type: ignore[arg-type]
    report: Any = sr.content  # highdicom types it as a plain ContentSequence
    seg = hd.seg.segread(written["seg"])  # type: ignore[arg-type]
    uids = OutputUids(case.result.series.series_instance_uid, case.result.model.sha256)
    by_uid = {str(d.SOPInstanceUID): d for d in case.datasets}
    kept = sorted((d for d in case.result.detections if d.kept), key=lambda d: d.id)
    for number, det in enumerate(kept, start=1):
        tracking = uids.tracking(det.id)
        assert seg.get_segment_description(number).tracking_uid == tracking
        volumetric = report.get_volumetric_roi_measurement_groups(tracking_uid=tracking)
        assert len(volumetric) == 1
        ref = volumetric[0].referenced_segment
        assert ref is not None and ref.referenced_segment_numbers == [number]
        planar = report.get_planar_roi_measurement_groups(tracking_uid=tracking)
        # the circle group comes first and carries the measurements (what OHIF draws)
        first = report.get_planar_roi_measurement_groups()[0]
        assert first.get_measurements()  # e.g. the first CMB's circle
        circle_group = next(
            g
            for g in planar
            if isinstance(g.roi, hd.sr.ImageRegion) and g.roi.graphic_type.value == "CIRCLE"
        )
        values = {m.name.meaning: m.value for m in circle_group.get_measurements()}
        assert values["Volume"] == pytest.approx(det.volume_mm3, abs=1e-3)
        assert values["Diameter"] == pytest.approx(det.diameter_mm, abs=1e-3)
        assert values["Probability"] == pytest.approx(det.probability, abs=1e-4)
        point = next(g.roi for g in planar if isinstance(g.roi, hd.sr.ImageRegion3D))
        np.testing.assert_allclose(point.value[0], det.center_lps_mm, atol=1e-3)
        circle = next(
            g.roi
            for g in planar
            if isinstance(g.roi, hd.sr.ImageRegion) and g.roi.graphic_type.value == "CIRCLE"
        )
        source = (
            circle.ReferencedImageSequence[0]
            if "ReferencedImageSequence" in circle
            else (circle.ContentSequence[0].ReferencedSOPSequence[0])
        )
        ds = by_uid[str(source.ReferencedSOPInstanceUID)]
        frame = int(source.ReferencedFrameNumber) if "ReferencedFrameNumber" in source else None
        ipp, iop, ps = _frame_geometry(ds, frame)
        col, row = np.asarray(circle.value[0]) - 0.5
        lps = ipp + col * ps[1] * iop[:3] + row * ps[0] * iop[3:]
        # the marker is drawn on the slice through the centre, at the centre
        np.testing.assert_allclose(lps, det.center_lps_mm, atol=1e-3)
        radius_px = np.linalg.norm(np.subtract(*circle.value[:2]))
        assert radius_px * min(ps) == pytest.approx(det.diameter_mm / 2, rel=1e-3)
    # study-level findings are TID 1500 "Qualitative Evaluations", not a measurement group
    assert report.get_image_measurement_groups() == []
    root = sr.ContentSequence
    evaluations = [i for i in root if i.ConceptNameCodeSequence[0].CodeValue == "C0034375"]
    assert len(evaluations) == 1


def test_sr_says_definite_or_possible(make_case: Callable[..., Case], tmp_path: Path) -> None:
    """Each CMB's rating band is a qualitative evaluation; the counts are study-level items."""
    case = make_case("axial", rated=True)
    rated = case.result
    written = write_outputs(rated, case.datasets, tmp_path, ("sr",))
    sr = hd.sr.srread(written["sr"])  # type: ignore[arg-type]
    report: Any = sr.content
    uids = OutputUids(rated.series.series_instance_uid, rated.model.sha256)
    bands = {}
    for det_id in (1, 2):
        groups = report.get_planar_roi_measurement_groups(tracking_uid=uids.tracking(det_id))
        evaluations = {
            e.name.meaning: e.value.meaning for g in groups for e in g.get_qualitative_evaluations()
        }
        bands[det_id] = evaluations["Microbleed rating certainty"]
    assert bands == {1: "Possible microbleed", 2: "Definite microbleed"}
    study = next(
        i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "C0034375"
    )
    texts = {
        i.ConceptNameCodeSequence[0].CodeMeaning: i.TextValue
        for i in study.ContentSequence
        if i.ValueType == "TEXT"
    }
    assert texts["Number of definite microbleeds"] == "1"
    assert texts["Number of possible microbleeds"] == "1"
