from __future__ import annotations

import dataclasses

from model.dicom_out.findings import Finding, findings_of, pattern_of, structure_of, summary_of
from model.types import Detection, MarsCategory
from tests.model.dicom_out.conftest import Case


def _f(n: int, mars: MarsCategory | None, region: str = "") -> Finding:
    d = Detection(
        id=n,
        center_lps_mm=(0, 0, 0),
        diameter_mm=3,
        volume_mm3=10,
        probability=0.9,
        mars=mars,
        region=region,
    )
    return Finding(number=n, detection=d)


def test_only_kept_detections_are_findings(axial_case: Case) -> None:
    findings = findings_of(axial_case.result)
    assert [f.detection.id for f in findings] == [1, 2]  # id 3 was rejected
    assert [f.name for f in findings] == ["CMB 1", "CMB 2"]


def test_patterns() -> None:
    lobar, deep = MarsCategory.LOBAR, MarsCategory.DEEP
    infra = MarsCategory.INFRATENTORIAL
    assert pattern_of([]) == "none"
    assert pattern_of([_f(1, lobar), _f(2, lobar)]) == "strictly lobar"
    assert pattern_of([_f(1, deep), _f(2, infra, "Brain-Stem")]) == "strictly deep"
    assert pattern_of([_f(1, lobar), _f(2, deep)]) == "mixed"
    assert pattern_of([_f(1, lobar), _f(2, infra, "Brain-Stem")]) == "mixed"
    # cerebellar CMBs do not break a strictly lobar pattern (Boston criteria v2.0)
    assert pattern_of([_f(1, lobar), _f(2, infra, "Left-Cerebellum-Cortex")]) == "strictly lobar"
    assert pattern_of([_f(1, None)]) == "undetermined"


def test_summary_counts(axial_case: Case) -> None:
    s = summary_of(findings_of(axial_case.result))
    assert s.total == 2
    assert s.by_mars[MarsCategory.LOBAR] == 1 and s.by_mars[MarsCategory.DEEP] == 1
    assert s.by_mars[MarsCategory.INFRATENTORIAL] == 0
    assert dict(s.lobe_rows()) == {"left frontal": 1, "right thalamus": 1}
    assert s.pattern == "mixed"


def test_structure_of() -> None:
    assert structure_of("Right-Thalamus") == "thalamus"
    assert structure_of("ctx-lh-superiorfrontal") == "superiorfrontal"
    assert structure_of(None) == ""


def test_rated_findings_are_definite_or_possible(axial_case: Case) -> None:
    """The MARS rating's band (location filter ran) marks each finding; kept ones 0.6 and 0.7."""
    rated = dataclasses.replace(
        axial_case.result, location={"mars_rating": {"definite_probability": 0.65}}
    )
    findings = findings_of(rated)
    assert [f.certainty for f in findings] == ["possible", "definite"]
    assert summary_of(findings).by_certainty == {"definite": 1, "possible": 1}


def test_unrated_findings_have_no_certainty(axial_case: Case) -> None:
    findings = findings_of(axial_case.result)  # no location filter: no rating
    assert {f.certainty for f in findings} == {None}
    assert summary_of(findings).by_certainty == {}
