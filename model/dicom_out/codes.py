"""Every coded concept our DICOM outputs use, with its source.

Standard concepts are taken from pydicom's ``codes`` collections, which are
generated from DICOM PS3.16 (Annex D for DCM, the SNOMED CT and UCUM subsets
of the context groups it names); a misspelt name raises ``AttributeError`` at
import, so no code here can be invented by accident.  The context group (CID)
each concept is drawn from is given in the comment beside it.

No standard code exists for cerebral-microbleed specific notions (the MARS
location categories, the distribution pattern, counts per category, the
parcellation label of our location filter).  They use the private coding
scheme ``99CMB``, declared in every object's Coding Scheme Identification
Sequence (PS3.3 C.12.1.1.3.1; "99" prefix per PS3.16 §8.2 for local schemes).
IHE AI Results (Rev 1.1, Table 6.5.3.2-1) names the Contributing Equipment
purpose ``(Newcode1, 99IHE, "Processing Algorithm")``; 99IHE is declared the
same way.
"""

from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from model.types import MarsCategory

PRIVATE_SCHEME = "99CMB"
PRIVATE_SCHEME_NAME = "cmb-detect cerebral microbleed concepts"
PRIVATE_SCHEME_ORGANIZATION = "cmb-detect project"
IHE_SCHEME = "99IHE"


def _private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


def _concept(code: object) -> CodedConcept:
    return CodedConcept.from_code(code)  # type: ignore[arg-type]


# --- What the finding is ------------------------------------------------------
# CID 7150 "Segmentation Property Categories"; SCT 49755003.
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = _concept(codes.SCT.MorphologicallyAbnormalStructure)
# CID 7151 "Segmentation Property Types" / CID 7159 "Lesion Segmentation Types";
# SCT 50960005 "Hemorrhage" (morphologic abnormality).  A microbleed is a small
# chronic haemorrhage; SNOMED CT in DICOM PS3.16 has no narrower concept.
HEMORRHAGE = _concept(codes.SCT.Hemorrhage)

# --- Anatomy -------------------------------------------------------------------
# CID 7151/7153 (SCT): the region of every finding is at least the brain.
BRAIN = _concept(codes.SCT.Brain)  # SCT 12738006
LEFT = _concept(codes.SCT.Left)  # CID 244 "Laterality", SCT 7771000
RIGHT = _concept(codes.SCT.Right)  # CID 244 "Laterality", SCT 24028007

#: Keyword (lower case, matched in Detection.lobe / Detection.region) → SCT concept.
#: All from CID 7151/7153/7140 ("Anatomic Structure" groups) via pydicom.
ANATOMY: tuple[tuple[str, CodedConcept], ...] = (
    ("frontal", _concept(codes.SCT.FrontalLobe)),  # SCT 83251001
    ("parietal", _concept(codes.SCT.ParietalLobe)),  # SCT 16630005
    ("temporal", _concept(codes.SCT.TemporalLobe)),  # SCT 78277001
    ("occipital", _concept(codes.SCT.OccipitalLobe)),  # SCT 31065004
    ("insula", _concept(codes.SCT.Insula)),  # SCT 36169008
    ("cingul", _concept(codes.SCT.LimbicLobe)),  # SCT 279215006
    ("limbic", _concept(codes.SCT.LimbicLobe)),  # SCT 279215006
    ("hippocamp", _concept(codes.SCT.Hippocampus)),  # SCT 5366008
    ("amygdala", _concept(codes.SCT.Amygdala)),  # SCT 4958002
    ("thalam", _concept(codes.SCT.Thalamus)),  # SCT 42695009
    ("caudate", _concept(codes.SCT.CaudateNucleus)),  # SCT 11000004
    ("putamen", _concept(codes.SCT.Putamen)),  # SCT 89278009
    ("pallid", _concept(codes.SCT.GlobusPallidus)),  # SCT 14738005
    ("internal capsule", _concept(codes.SCT.InternalCapsule)),  # SCT 85637007 (CID 7710)
    ("external capsule", _concept(codes.SCT.ExternalCapsule)),  # SCT 10517005 (CID 7710)
    ("corpus callosum", _concept(codes.SCT.CorpusCallosum)),  # SCT 88442005
    ("midbrain", _concept(codes.SCT.Midbrain)),  # SCT 61962009
    ("brainstem", _concept(codes.SCT.BrainStem)),  # SCT 119238007
    ("brain-stem", _concept(codes.SCT.BrainStem)),
    ("brain stem", _concept(codes.SCT.BrainStem)),
    ("pons", _concept(codes.SCT.BrainStem)),  # no pons concept in PS3.16: its parent
    ("medulla", _concept(codes.SCT.BrainStem)),
    ("cerebell", _concept(codes.SCT.Cerebellum)),  # SCT 113305005
    ("white matter", _concept(codes.SCT.CerebralWhiteMatter)),  # SCT 68523003
    ("white-matter", _concept(codes.SCT.CerebralWhiteMatter)),
    ("cortex", _concept(codes.SCT.CerebralCortex)),  # SCT 40146001
)

# --- Measurements (CID 7469 "Generic Intensity and Size Measurements") -----------
VOLUME = _concept(codes.SCT.Volume)  # SCT 118565006
DIAMETER = _concept(codes.SCT.Diameter)  # SCT 81827009
PROBABILITY = _concept(codes.DCM.Probability)  # DCM 122157
NUMBER_OF_LESIONS = _concept(codes.SCT.NumberOfLesions)  # SCT 246206008 (observable entity)
CENTER = _concept(codes.DCM.Center)  # DCM 111010, CID 219 "Geometry Graphical Representation"
# Units, CID 7181 (UCUM).
MM = _concept(codes.UCUM.Millimeter)
MM3 = _concept(codes.UCUM.CubicMillimeter)
NO_UNITS = _concept(codes.UCUM.NoUnits)  # UCUM "1"

# --- Report structure -----------------------------------------------------------
IMAGING_MEASUREMENT_REPORT = _concept(codes.DCM.ImagingMeasurementReport)  # CID 7021, DCM 126000
# CID 100 "Quantitative Diagnostic Imaging Procedures": LOINC 24590-2 "Brain MRI".
PROCEDURE_BRAIN_MRI = _concept(codes.LN.BrainMRI)
# TID 1500 row 12 "Qualitative Evaluations" container: (C0034375, UMLS), as PS3.16 TID 1500
# defines it (pydicom's code dictionary has no keyword for it).
QUALITATIVE_EVALUATIONS = CodedConcept(
    value="C0034375", scheme_designator="UMLS", meaning="Qualitative Evaluations"
)
PRESENT = _concept(codes.DCM.Present)  # DCM 121053
ABSENT = _concept(codes.DCM.Absent)  # DCM 121054
PROCESSING_ALGORITHM_IHE = CodedConcept(
    value="Newcode1", scheme_designator=IHE_SCHEME, meaning="Processing Algorithm"
)

# --- Private: MARS and the distribution pattern ---------------------------------
MARS_CATEGORY = _private("CMB-0010", "MARS location category")
MARS_VALUES: dict[MarsCategory, CodedConcept] = {
    MarsCategory.LOBAR: _private("CMB-0011", "MARS lobar"),
    MarsCategory.DEEP: _private("CMB-0012", "MARS deep"),
    MarsCategory.INFRATENTORIAL: _private("CMB-0013", "MARS infratentorial"),
}
MARS_COUNT: dict[MarsCategory | None, CodedConcept] = {
    MarsCategory.LOBAR: _private("CMB-0021", "Number of lobar microbleeds"),
    MarsCategory.DEEP: _private("CMB-0022", "Number of deep microbleeds"),
    MarsCategory.INFRATENTORIAL: _private("CMB-0023", "Number of infratentorial microbleeds"),
    None: _private("CMB-0024", "Number of microbleeds without MARS category"),
}
CMB_PRESENCE = _private("CMB-0030", "Cerebral microbleeds")
PATTERN = _private("CMB-0040", "Microbleed distribution pattern")
PATTERN_VALUES: dict[str, CodedConcept] = {
    "none": _private("CMB-0041", "No microbleeds"),
    "strictly lobar": _private("CMB-0042", "Strictly lobar"),
    "strictly deep": _private("CMB-0043", "Strictly deep or infratentorial"),
    "mixed": _private("CMB-0044", "Mixed lobar and deep"),
    "undetermined": _private("CMB-0045", "Undetermined"),
}
PARCELLATION_REGION = _private("CMB-0050", "Parcellation region")
# The MARS rating's band (model.location.rating): definite at or above its probability.
CERTAINTY = _private("CMB-0060", "Microbleed rating certainty")
CERTAINTY_VALUES: dict[str, CodedConcept] = {
    "definite": _private("CMB-0061", "Definite microbleed"),
    "possible": _private("CMB-0062", "Possible microbleed"),
}
CERTAINTY_COUNT: dict[str, CodedConcept] = {
    "definite": _private("CMB-0063", "Number of definite microbleeds"),
    "possible": _private("CMB-0064", "Number of possible microbleeds"),
}


def region_value(label: int | None, name: str) -> CodedConcept:
    """The private code of one parcellation label (value = label number, meaning = its name)."""
    value = f"REGION-{label}" if label is not None else "REGION-UNKNOWN"
    return _private(value, name[:64] or "unknown")


def lobe_value(lobe: str) -> CodedConcept:
    """The private code (finding site) for a lobe name that has no SCT concept in ``ANATOMY``."""
    slug = "".join(ch if ch.isalnum() else "-" for ch in lobe.upper())[:12]
    return _private(f"LOBE-{slug}", lobe[:64])


def anatomy_for(text: str | None) -> CodedConcept | None:
    """The SCT anatomy concept whose keyword occurs first in ``text`` (case-insensitive)."""
    if not text:
        return None
    low = text.lower().replace("_", " ")
    for keyword, concept in ANATOMY:
        if keyword in low:
            return concept
    return None


def laterality_for(*texts: str | None) -> CodedConcept | None:
    """Left/Right from a hemisphere or region string ("left", "lh", "Left-Thalamus"...)."""
    for text in texts:
        if not text:
            continue
        low = text.lower()
        if low in ("l", "lh", "left") or low.startswith(("left", "lh-", "lh_", "ctx-lh")):
            return LEFT
        if low in ("r", "rh", "right") or low.startswith(("right", "rh-", "rh_", "ctx-rh")):
            return RIGHT
    return None


def coding_scheme_identification(schemes: tuple[str, ...] = (PRIVATE_SCHEME,)) -> list[Dataset]:
    """Items of the Coding Scheme Identification Sequence for our private schemes."""
    items = []
    for scheme in schemes:
        item = Dataset()
        item.CodingSchemeDesignator = scheme
        if scheme == PRIVATE_SCHEME:
            item.CodingSchemeName = PRIVATE_SCHEME_NAME
            item.CodingSchemeResponsibleOrganization = PRIVATE_SCHEME_ORGANIZATION
        elif scheme == IHE_SCHEME:
            item.CodingSchemeName = "IHE Radiology Technical Framework codes"
            item.CodingSchemeResponsibleOrganization = "IHE"
        else:
            raise ValueError(f"unknown private coding scheme {scheme!r}")
        items.append(item)
    return items
