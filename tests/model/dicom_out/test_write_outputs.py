"""The public entry point: choice of outputs, determinism, identity copied from the source."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from model.dicom_out import write_outputs
from model.types import ModelInfo
from tests.model.dicom_out.conftest import Case

ALL = ("seg", "sr", "pdf", "sc")


def _uids(written: dict[str, Path | list[Path]]) -> dict[str, str]:
    out = {}
    for kind, value in written.items():
        if kind == "html":
            continue
        for p in value if isinstance(value, list) else [value]:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            out[p.name] = f"{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}"
    return out


def test_default_outputs_are_seg_and_sr(axial_case: Case, tmp_path: Path) -> None:
    written = write_outputs(axial_case.result, axial_case.datasets, tmp_path)
    assert set(written) == {"seg", "sr"}
    assert written["seg"] == tmp_path / "seg.dcm" and written["sr"] == tmp_path / "sr.dcm"
    assert not list(tmp_path.glob("*.part"))


def test_unknown_output_kind_is_refused(axial_case: Case, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown output kind"):
        write_outputs(axial_case.result, axial_case.datasets, tmp_path, ("seg", "nifti"))


def test_rerun_replaces_instead_of_duplicating(axial_case: Case, tmp_path: Path) -> None:
    first = _uids(write_outputs(axial_case.result, axial_case.datasets, tmp_path / "a", ALL))
    again = _uids(write_outputs(axial_case.result, axial_case.datasets, tmp_path / "b", ALL))
    assert first == again
    assert len(set(first.values())) == len(first)  # every object has its own UID
    other_model = dataclasses.replace(
        axial_case.result, model=ModelInfo(name="cmb-unet", version="1.3.0", sha256="cd" * 32)
    )
    third = _uids(write_outputs(other_model, axial_case.datasets, tmp_path / "c", ALL))
    assert set(third.values()).isdisjoint(first.values())


def test_results_join_the_source_study(axial_case: Case, tmp_path: Path) -> None:
    src = axial_case.datasets[0]
    written = write_outputs(axial_case.result, axial_case.datasets, tmp_path, ALL)
    numbers = set()
    for value in written.values():
        for p in value if isinstance(value, list) else [value]:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            for kw in (
                "StudyInstanceUID",
                "PatientID",
                "PatientName",
                "PatientBirthDate",
                "AccessionNumber",
                "StudyDate",
                "StudyID",
            ):
                assert ds.get(kw) == src.get(kw), f"{p.name}: {kw}"
            assert ds.SeriesInstanceUID != src.SeriesInstanceUID
            assert ds.SeriesDescription.startswith("CMB AI")
            numbers.add((p.name[:3], int(ds.SeriesNumber)))
            equipment = ds.ContributingEquipmentSequence[-1]
            purpose = equipment.PurposeOfReferenceCodeSequence[0]
            assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("Newcode1", "99IHE")
            assert equipment.ManufacturerModelName == "cmb-unet"
            assert any("1.2.0" in v for v in equipment.SoftwareVersions)
            assert equipment.DeviceUID.startswith("2.25.")
            schemes = {i.CodingSchemeDesignator for i in ds.CodingSchemeIdentificationSequence}
            assert "99IHE" in schemes
    assert {n for _, n in numbers} == {9901, 9902, 9903, 9904}


@pytest.mark.parametrize(
    ("charset", "name"),
    [("ISO_IR 100", "Müller^Jürgen"), ("ISO_IR 192", "山田^太郎"), (None, "PLAIN^ASCII")],
)
def test_character_sets_are_kept(
    make_case: Callable[..., Case], tmp_path: Path, charset: str | None, name: str
) -> None:
    case = make_case("axial")
    for ds in case.datasets:
        if charset is None:
            del ds.SpecificCharacterSet
        else:
            ds.SpecificCharacterSet = charset
        ds.PatientName = name
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*missing from font")  # names must print
        written = write_outputs(case.result, case.datasets, tmp_path, ALL)
    for value in written.values():
        for p in value if isinstance(value, list) else [value]:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            assert ds.get("SpecificCharacterSet") == charset, p.name
            assert str(ds.PatientName) == name, p.name


def test_sr_without_seg_references_no_segment(axial_case: Case, tmp_path: Path) -> None:
    written = write_outputs(axial_case.result, axial_case.datasets, tmp_path, ("sr",))
    assert set(written) == {"sr"}
    ds = pydicom.dcmread(written["sr"])  # type: ignore[arg-type]
    assert "seg.dcm" not in {p.name for p in tmp_path.iterdir()}
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert all(
        s.SeriesInstanceUID == axial_case.result.series.series_instance_uid for s in evidence
    )


def test_html_report(axial_case: Case, tmp_path: Path) -> None:
    written = write_outputs(axial_case.result, axial_case.datasets, tmp_path, (), pdf_html=True)
    text = Path(written["html"]).read_text(encoding="utf-8")  # type: ignore[arg-type]
    assert "2 cerebral microbleeds found" in text and "CMB 2" in text
    assert "data:image/png;base64," in text
    assert "ctx-lh-lateraloccipital" not in text  # rejected candidate
    assert "definite" not in text  # no location filter, no rating


def test_html_report_says_definite_or_possible(
    make_case: Callable[..., Case], tmp_path: Path
) -> None:
    case = make_case("axial", rated=True)
    rated = case.result
    written = write_outputs(rated, case.datasets, tmp_path, (), pdf_html=True)
    text = Path(written["html"]).read_text(encoding="utf-8")  # type: ignore[arg-type]
    assert "2 cerebral microbleeds found (1 lobar, 1 deep; 1 definite, 1 possible)" in text
    assert "<th>Rating</th>" in text
