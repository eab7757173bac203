"""Encapsulated PDF Storage (PS3.3 A.45.1) holding the human-readable report.

Built on highdicom's ``SOPClass`` so that the Patient and General Study
modules are copied from the source instance exactly as highdicom does for
SEG and SR (``copy_patient_and_study_information``).
"""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian

from model.dicom_out.common import SERIES_NUMBERS, Identity, add_ihe_equipment, character_set_of
from model.dicom_out.geometry import SourceLayout
from model.dicom_out.render import KeyImage

__all__ = ["DOCUMENT_TITLE", "build_pdf"]

DOCUMENT_TITLE = "Cerebral microbleed detection report"


def _source_items(layout: SourceLayout, keys: list[KeyImage]) -> list[Dataset]:
    """Source Instance Sequence: the instances whose pixels the key images show."""
    seen: dict[str, Dataset] = {}
    for key in keys:
        ds = key.frame.dataset
        item = Dataset()
        item.ReferencedSOPClassUID = ds.SOPClassUID
        item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        seen.setdefault(str(ds.SOPInstanceUID), item)
    if not seen:  # no key images (no CMB): the report still derives from the series
        ds = layout.datasets[0]
        item = Dataset()
        item.ReferencedSOPClassUID = ds.SOPClassUID
        item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        seen[str(ds.SOPInstanceUID)] = item
    return list(seen.values())


def build_pdf(
    identity: Identity, layout: SourceLayout, pdf: bytes, keys: list[KeyImage]
) -> hd.SOPClass:
    """The Encapsulated PDF object (not yet written)."""
    source = layout.datasets[0]
    ds = hd.SOPClass(
        study_instance_uid=str(source.StudyInstanceUID),
        series_instance_uid=identity.uids.series("pdf"),
        series_number=SERIES_NUMBERS["pdf"],
        sop_instance_uid=identity.uids.instance("pdf"),
        sop_class_uid=EncapsulatedPDFStorage,
        instance_number=1,
        modality="DOC",
        manufacturer="cmb-detect",
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=identity.series_description("pdf"),
        manufacturer_model_name=identity.model_name,
        software_versions=identity.software_versions,  # type: ignore[arg-type]
        device_serial_number=identity.serial_number,
        specific_character_set=character_set_of(source),
    )
    ds.copy_patient_and_study_information(source)
    # SC Equipment module (required by the Encapsulated PDF IOD): synthetic image.
    ds.ConversionType = "SYN"
    # Encapsulated Document module
    ds.AcquisitionDateTime = ""
    ds.BurnedInAnnotation = "YES"  # names and identifiers are printed on the pages
    ds.DocumentTitle = DOCUMENT_TITLE
    ds.ConceptNameCodeSequence = DicomSequence([])
    ds.SourceInstanceSequence = DicomSequence(_source_items(layout, keys))
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    data = pdf if len(pdf) % 2 == 0 else pdf + b"\x00"  # OB must have even length
    ds.EncapsulatedDocument = data
    ds.EncapsulatedDocumentLength = len(pdf)
    add_ihe_equipment(ds, identity)
    return ds
