"""Independent validators and readers: dciodvfy, dcmqi, dcmtk dsrdump, highdicom."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from model.dicom_out import write_outputs
from tests.model.dicom_out.conftest import Case

ALL = ("seg", "sr", "pdf", "sc")
#: dciodvfy warnings reviewed and accepted (reasons in docs/dicom-outputs.md).
ACCEPTED_WARNINGS = (
    re.compile(
        r"Unrecognized defined term <99CMB> for value 1 of attribute <Coding Scheme Designator>"
    ),
    re.compile(r"Attribute is not present in standard DICOM IOD - \(0x0018,0x1002\) UI Device UID"),
    re.compile(
        r"Dicom dataset contains attributes not present in standard DICOM IOD - "
        r"this is a Standard Extended SOP Class"
    ),
)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        venv_bin = Path(__file__).resolve().parents[3] / ".venv" / "bin" / name
        if venv_bin.exists():
            return str(venv_bin)
        pytest.skip(f"{name} is not installed")
    return path


def _dciodvfy(path: Path) -> list[str]:
    proc = subprocess.run(
        [_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60
    )
    return [
        ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith(("Error", "Warning"))
    ]


def _all_files(written: dict[str, Path | list[Path]]) -> list[Path]:
    files: list[Path] = []
    for kind, value in written.items():
        if kind in ALL:
            files.extend(value if isinstance(value, list) else [value])
    return files


@pytest.mark.parametrize(
    ("geometry", "options"),
    [
        ("axial", {}),
        ("oblique", {"enhanced": True}),
        ("feet_first", {}),
        ("axial", {"with_cmbs": False}),
        ("axial", {"rated": True}),
    ],
)
def test_dciodvfy_reports_no_errors(
    make_case: Callable[..., Case], tmp_path: Path, geometry: str, options: dict[str, object]
) -> None:
    case = make_case(geometry, **options)
    written = write_outputs(case.result, case.datasets, tmp_path / "out", ALL)
    files = _all_files(written)
    assert len(files) == (2 if options.get("with_cmbs") is False else 5)  # seg, sr, pdf, 2 sc
    for path in files:
        lines = _dciodvfy(path)
        errors = [ln for ln in lines if ln.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"
        unexpected = [ln for ln in lines if not any(p.search(ln) for p in ACCEPTED_WARNINGS)]
        assert not unexpected, f"{path.name}: unreviewed warnings {unexpected}"


@pytest.mark.parametrize("geometry", ["axial", "oblique", "feet_first", "negated"])
def test_dcmqi_reads_back_same_mask_and_geometry(
    make_case: Callable[..., Case], tmp_path: Path, geometry: str
) -> None:
    import SimpleITK as sitk

    case = make_case(geometry)
    seg_path = write_outputs(case.result, case.datasets, tmp_path / "out", ("seg",))["seg"]
    out = tmp_path / "dcmqi"
    out.mkdir()
    proc = subprocess.run(
        [
            _tool("segimage2itkimage"),
            "--inputDICOM",
            str(seg_path),
            "--outputDirectory",
            str(out),
            "-t",
            "nrrd",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    labels = case.result.labels
    for number, det_id in enumerate((1, 2), start=1):
        image = sitk.ReadImage(str(out / f"{number}.nrrd"))
        arr = sitk.GetArrayFromImage(image)  # [z, y, x]
        theirs = np.array(
            [
                image.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
                for z, y, x in np.argwhere(arr > 0)
            ]
        )
        ours = labels.index_to_lps(np.argwhere(labels.array == det_id))
        assert len(theirs) == len(ours) > 0

        def key(points: np.ndarray) -> set[tuple[float, ...]]:
            return {tuple(p) for p in np.round(points, 2)}

        assert key(theirs) == key(ours), f"segment {number}: dcmqi voxels differ in LPS"


def test_highdicom_reads_back_per_source_instance(axial_case: Case, tmp_path: Path) -> None:
    seg_path = write_outputs(axial_case.result, axial_case.datasets, tmp_path / "o", ("seg",))[
        "seg"
    ]
    seg = hd.seg.segread(seg_path)  # type: ignore[arg-type]
    assert seg.number_of_segments == 2
    desc = seg.get_segment_description(1)
    assert desc.segment_label.startswith("CMB 1")
    assert desc.tracking_id == "CMB 1"
    uids = [s.sop_instance_uid for s in axial_case.result.labels.slices]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        segment_numbers=[1, 2],
        combine_segments=True,
        skip_overlap_checks=True,
    )
    expected = np.where(
        np.isin(axial_case.result.labels.array, [1, 2]), axial_case.result.labels.array, 0
    )
    np.testing.assert_array_equal(pixels, expected.astype(pixels.dtype))


def test_highdicom_reads_back_enhanced(make_case: Callable[..., Case], tmp_path: Path) -> None:
    case = make_case("negated", enhanced=True)
    seg_path = write_outputs(case.result, case.datasets, tmp_path / "o", ("seg",))["seg"]
    seg = hd.seg.segread(seg_path)  # type: ignore[arg-type]
    pixels = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=str(case.datasets[0].SOPInstanceUID),
        source_frame_numbers=list(range(1, 11)),
        segment_numbers=[1, 2],
        combine_segments=True,
        skip_overlap_checks=True,
        assert_missing_frames_are_empty=True,  # empty frames are omitted by design
    )
    expected = np.where(np.isin(case.result.labels.array, [1, 2]), case.result.labels.array, 0)
    np.testing.assert_array_equal(pixels, expected.astype(pixels.dtype))


def _dsrdump(path: Path) -> str:
    proc = subprocess.run(
        [_tool("dsrdump"), "-Ee", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_dsrdump_lists_every_cmb_with_its_numbers(axial_case: Case, tmp_path: Path) -> None:
    sr_path = write_outputs(axial_case.result, axial_case.datasets, tmp_path / "o", ("seg", "sr"))[
        "sr"
    ]
    text = _dsrdump(sr_path)  # type: ignore[arg-type]
    kept = [d for d in axial_case.result.detections if d.kept]
    groups = text.split('"Measurement Group"')
    for number, det in enumerate(kept, start=1):
        mine = [g for g in groups if f'"Tracking Identifier")="CMB {number}"' in g]
        assert len(mine) == 3, f"CMB {number}: expected volumetric, centre and circle groups"
        # the circle on the source slice comes first and carries the numbers (OHIF draws it)
        assert "(CIRCLE," in mine[0]
        volumetric = mine[0]
        volume = float(re.search(r'"Volume"\)="([0-9.]+)"', volumetric).group(1))  # type: ignore[union-attr]
        diameter = float(re.search(r'"Diameter"\)="([0-9.]+)"', volumetric).group(1))  # type: ignore[union-attr]
        prob = float(re.search(r'"Probability"\)="([0-9.]+)"', volumetric).group(1))  # type: ignore[union-attr]
        assert volume == pytest.approx(det.volume_mm3, abs=1e-3)
        assert diameter == pytest.approx(det.diameter_mm, abs=1e-3)
        assert prob == pytest.approx(det.probability, abs=1e-4)
        segment = next(g for g in mine if "Referenced Segment" in g)
        assert f"(SG image,,{number})" in segment  # its SEG segment
        centre = next(g for g in mine if "SCOORD3D" in g)
        xyz = re.search(r"\(POINT,,([-0-9.e]+)/([-0-9.e]+)/([-0-9.e]+)\)", centre)
        assert xyz is not None
        np.testing.assert_allclose([float(v) for v in xyz.groups()], det.center_lps_mm, atol=1e-3)
        assert any("(CIRCLE," in g for g in mine)
    assert '"Tracking Identifier")="CMB 3"' not in text  # the rejected candidate
    assert "lateraloccipital" not in text
    assert '"CMB summary"' not in text  # study level: TID 1500 Qualitative Evaluations
    summary = text.split('"Qualitative Evaluations"')[1]
    assert re.search(r'"Number of lesions \(observable entity\)"\)="2(\.0)?"', summary)
    assert re.search(r'"Number of lobar microbleeds"\)="1(\.0)?"', summary)
    assert re.search(r'"Number of deep microbleeds"\)="1(\.0)?"', summary)
    assert '"Present"' in summary and "Mixed lobar and deep" in summary


def test_dsrdump_states_no_cmb_found(make_case: Callable[..., Case], tmp_path: Path) -> None:
    case = make_case("axial", with_cmbs=False)
    written = write_outputs(case.result, case.datasets, tmp_path / "o", ("seg", "sr"))
    assert "seg" not in written  # empty-result policy: no SEG
    text = _dsrdump(written["sr"])  # type: ignore[arg-type]
    assert '"Cerebral microbleeds")=(121054,DCM,"Absent")' in text
    assert '"No microbleeds"' in text
    assert re.search(r'"Number of lesions \(observable entity\)"\)="0(\.0)?"', text)
    assert "Referenced Segment" not in text
    assert '"Imaging Measurements"' not in text  # TID 1500: row 12 alone is enough
    sr = hd.sr.srread(written["sr"])  # type: ignore[arg-type]  # highdicom reads it back
    assert sr.content.get_planar_roi_measurement_groups() == []  # type: ignore[attr-defined]
