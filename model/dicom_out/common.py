"""What every output object shares: identity, equipment, character set, series numbering.

IHE AI Results (AIR) alignment: results go into the *source study* (patient
and study modules are copied from the source instances), each object carries a
Contributing Equipment Sequence item that names the algorithm with the purpose
``(Newcode1, 99IHE, "Processing Algorithm")``, its manufacturer, model name,
software versions, serial number and a Device UID, and the character set of
the source is kept so that copied names are encoded as they were received.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import DT

from model.dicom_out import codes
from model.dicom_out.uids import OutputUids
from model.types import Result

__all__ = ["SERIES_NUMBERS", "Identity", "add_ihe_equipment", "character_set_of"]

MANUFACTURER = "cmb-detect"
#: Series numbers of our output series in the source study.  Fixed, high and
#: distinct so that they sort after the acquired series in a PACS browser.
SERIES_NUMBERS = {"seg": 9901, "sr": 9902, "pdf": 9903, "sc": 9904}
SERIES_DESCRIPTIONS = {
    "seg": "CMB AI segmentation",
    "sr": "CMB AI measurements (TID 1500)",
    "pdf": "CMB AI report",
    "sc": "CMB AI key images",
}


@dataclass(frozen=True)
class Identity:
    """Who made an output: the algorithm's identity as written into DICOM."""

    result: Result
    uids: OutputUids

    @classmethod
    def of(cls, result: Result) -> Identity:
        return cls(
            result=result,
            uids=OutputUids(result.series.series_instance_uid, result.model.sha256),
        )

    @property
    def model_name(self) -> str:
        return (self.result.model.name or "cmb-detect model")[:64]

    @property
    def software_versions(self) -> list[str]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            package = version("cmb-detect")
        except PackageNotFoundError:
            package = "0+unknown"
        return [f"cmb-detect {package}"[:64], f"model {self.result.model.version}"[:64]]

    @property
    def serial_number(self) -> str:
        """The model file's sha256 prefix: identifies the exact weights."""
        return self.result.model.sha256[:16] or "unknown"

    def series_description(self, kind: str) -> str:
        return f"{SERIES_DESCRIPTIONS[kind]} v{self.result.model.version}"[:64]


def character_set_of(source: Dataset) -> str | list[str] | None:
    """The source's Specific Character Set, kept as is (single or multi-valued)."""
    if "SpecificCharacterSet" not in source:
        return None
    value = source.SpecificCharacterSet
    if isinstance(value, str):
        return value or None
    values = [str(v) for v in value]
    return values if values else None


def _equipment_item(identity: Identity, when: datetime.datetime) -> Dataset:
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [codes.PROCESSING_ALGORITHM_IHE]
    item.Manufacturer = MANUFACTURER
    item.ManufacturerModelName = identity.model_name
    item.SoftwareVersions = identity.software_versions
    item.DeviceSerialNumber = identity.serial_number
    item.DeviceUID = identity.uids.device()
    item.ContributionDateTime = DT(when.strftime("%Y%m%d%H%M%S"))
    item.ContributionDescription = "Automated cerebral microbleed detection"
    return item


def add_ihe_equipment(ds: Dataset, identity: Identity, *, private_codes: bool = False) -> None:
    """Append our algorithm to the Contributing Equipment Sequence; declare private schemes.

    highdicom only accepts DCM purposes for its ContributingEquipment; the IHE
    AIR purpose code is therefore added here, after construction.  ``private_codes``
    also declares the 99CMB scheme (only objects that use its codes: the SR).
    """
    items = list(ds.get("ContributingEquipmentSequence", []))
    items.append(_equipment_item(identity, datetime.datetime.now(datetime.UTC)))
    ds.ContributingEquipmentSequence = DicomSequence(items)
    declared = {
        str(i.CodingSchemeDesignator) for i in ds.get("CodingSchemeIdentificationSequence", [])
    }
    wanted = (codes.IHE_SCHEME, codes.PRIVATE_SCHEME) if private_codes else (codes.IHE_SCHEME,)
    schemes = tuple(s for s in wanted if s not in declared)
    if schemes:
        existing = list(ds.get("CodingSchemeIdentificationSequence", []))
        ds.CodingSchemeIdentificationSequence = DicomSequence(
            existing + codes.coding_scheme_identification(schemes)
        )
