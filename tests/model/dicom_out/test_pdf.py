from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom

from model.dicom_out import write_outputs
from tests.model.dicom_out.conftest import Case


def test_encapsulated_pdf(axial_case: Case, tmp_path: Path) -> None:
    written = write_outputs(axial_case.result, axial_case.datasets, tmp_path, ("pdf",))
    ds = pydicom.dcmread(written["pdf"])  # type: ignore[arg-type]
    assert ds.SOPClassUID == pydicom.uid.EncapsulatedPDFStorage
    assert ds.Modality == "DOC" and ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    doc = bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)]
    assert doc == (tmp_path / "report.pdf").read_bytes()
    assert doc.startswith(b"%PDF-") and doc.rstrip().endswith(b"%%EOF")
    assert doc.count(b"/Type /Page\n") + doc.count(b"/Type /Page ") >= 2  # summary + key images
    sources = {i.ReferencedSOPInstanceUID for i in ds.SourceInstanceSequence}
    key_slices = {
        axial_case.result.labels.slices[4].sop_instance_uid,
        axial_case.result.labels.slices[6].sop_instance_uid,
    }
    assert sources == key_slices


def test_pdf_is_reproducible(axial_case: Case, tmp_path: Path) -> None:
    write_outputs(axial_case.result, axial_case.datasets, tmp_path / "a", ("pdf",))
    write_outputs(axial_case.result, axial_case.datasets, tmp_path / "b", ("pdf",))
    assert (tmp_path / "a/report.pdf").read_bytes() == (tmp_path / "b/report.pdf").read_bytes()


def test_pdf_without_findings(make_case: Callable[..., Case], tmp_path: Path) -> None:
    case = make_case("axial", with_cmbs=False)
    written = write_outputs(case.result, case.datasets, tmp_path, ("pdf",))
    doc = (tmp_path / "report.pdf").read_bytes()
    assert doc.count(b"/Type /Page\n") + doc.count(b"/Type /Page ") == 1
    assert pydicom.dcmread(written["pdf"]).SourceInstanceSequence  # type: ignore[arg-type]
