"""Comprehensive 3D SR, TID 1500 "Measurement Report", of the kept CMBs.

Per CMB (all groups share its Tracking Identifier "CMB n" and Tracking UID,
which are also the SEG segment's), in this order:

1. a *planar* group (TID 1410) whose region is a CIRCLE (SCOORD) on the source
   slice through the centre, diameter = the CMB's diameter, carrying the CMB's
   volume, diameter, probability, finding site (lobe/structure + laterality),
   the MARS category and the parcellation region;
2. a *volumetric* group (TID 1411) referencing its SEG segment (when a SEG is
   written);
3. a *planar* group whose region is the centre as an SCOORD3D POINT in the
   source frame of reference.

Why this order: OHIF 3.13 (cornerstone-dicom-sr) merges the groups of one
tracking UID and draws the first SCOORD/SCOORD3D it finds; a 2D circle with
its source image is drawn as a marker on that slice (checked in a browser by
tests/deploy/test_ohif_sr_markers.py).

Study level: TID 1500 row 12 "Qualitative Evaluations" (not a measurement
group: OHIF crashes on a group without an image region): presence
(Present/Absent: an empty result says explicitly that no CMB was found, and
then has no Imaging Measurements container), the distribution pattern, and
the counts (total, per MARS category, per lobe) as TEXT, since row 12 admits
only CODE and TEXT items.  Algorithm identification (TID 4019) is in every
group; the observer context is a device observer (TID 1004) for the algorithm.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    Comprehensive3DSR,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    ImageRegion,
    ImageRegion3D,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    ReferencedSegment,
    SourceImageForRegion,
    SourceSeriesForSegmentation,
    TrackingIdentifier,
    VolumetricROIMeasurementsAndQualitativeEvaluations,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as pd_codes

from model.dicom_out import codes
from model.dicom_out.common import SERIES_NUMBERS, Identity, add_ihe_equipment, character_set_of
from model.dicom_out.findings import Finding, summary_of
from model.dicom_out.geometry import SourceLayout

__all__ = ["build_sr"]

_Group = (
    PlanarROIMeasurementsAndQualitativeEvaluations
    | VolumetricROIMeasurementsAndQualitativeEvaluations
    | MeasurementsAndQualitativeEvaluations
)


def _algorithm(identity: Identity) -> AlgorithmIdentification:
    model = identity.result.model
    return AlgorithmIdentification(
        name=identity.model_name,
        version=model.version[:64] or "unknown",
        parameters=[f"model_sha256={model.sha256}"[:64]],
        manufacturer="cmb-detect",
    )


def _sites(finding: Finding) -> list[FindingSite]:
    d = finding.detection
    laterality = codes.laterality_for(d.hemisphere, d.region)
    site = codes.anatomy_for(d.lobe) or codes.anatomy_for(d.region)
    if site is None and d.lobe:
        site = codes.lobe_value(d.lobe)
    return [FindingSite(anatomic_location=site or codes.BRAIN, laterality=laterality)]


def _measurements(finding: Finding) -> list[Measurement]:
    d = finding.detection
    return [
        Measurement(name=codes.VOLUME, value=round(float(d.volume_mm3), 3), unit=codes.MM3),
        Measurement(name=codes.DIAMETER, value=round(float(d.diameter_mm), 3), unit=codes.MM),
        Measurement(
            name=codes.PROBABILITY, value=round(float(d.probability), 4), unit=codes.NO_UNITS
        ),
    ]


def _evaluations(finding: Finding) -> list[QualitativeEvaluation]:
    d = finding.detection
    out = []
    if d.mars is not None:
        out.append(QualitativeEvaluation(codes.MARS_CATEGORY, codes.MARS_VALUES[d.mars]))
    if finding.certainty is not None:
        out.append(
            QualitativeEvaluation(codes.CERTAINTY, codes.CERTAINTY_VALUES[finding.certainty])
        )
    if d.region:
        out.append(
            QualitativeEvaluation(
                codes.PARCELLATION_REGION, codes.region_value(d.region_label, d.region)
            )
        )
    return out


def _finding_groups(
    finding: Finding, identity: Identity, layout: SourceLayout, seg: Dataset | None
) -> list[_Group]:
    """The CMB's groups, all with its tracking identifier and UID; the circle group first.

    OHIF (cornerstone-dicom-sr, 3.13) merges the groups of one tracking UID and draws the
    first SCOORD/SCOORD3D it finds; a 2D circle with its source image is what it places
    on the slice, so the circle group comes first and carries the CMB's measurements.
    """
    d = finding.detection
    tracking = TrackingIdentifier(uid=identity.uids.tracking(d.id), identifier=finding.name)
    common = dict(
        tracking_identifier=tracking,
        finding_type=codes.HEMORRHAGE,
        finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        algorithm_id=_algorithm(identity),
        finding_sites=_sites(finding),
    )
    frame = layout.frame_through(d.center_lps_mm)
    row, col = frame.pixel_of(layout.volume, d.center_lps_mm)
    # SCOORD: (column, row), origin at the top-left corner of the top-left pixel
    # (PS3.3 C.18.6.1.1), so a pixel centre is index + 0.5.
    cx, cy = col + 0.5, row + 0.5
    radius_px = max(d.diameter_mm / 2.0 / min(frame.pixel_spacing), 1.0)
    groups: list[_Group] = [
        PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.CIRCLE,
                graphic_data=np.asarray([[cx, cy], [cx + radius_px, cy]], dtype=np.float64),
                source_image=SourceImageForRegion(
                    referenced_sop_class_uid=str(frame.dataset.SOPClassUID),
                    referenced_sop_instance_uid=frame.sop_instance_uid,
                    referenced_frame_numbers=(
                        [frame.frame_number] if frame.frame_number is not None else None
                    ),
                ),
            ),
            measurements=_measurements(finding),
            qualitative_evaluations=_evaluations(finding),
            **common,  # type: ignore[arg-type]
        )
    ]
    if seg is not None:
        groups.append(
            VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=ReferencedSegment(
                    sop_class_uid=str(seg.SOPClassUID),
                    sop_instance_uid=str(seg.SOPInstanceUID),
                    segment_number=finding.number,
                    source_series=SourceSeriesForSegmentation(
                        identity.result.series.series_instance_uid
                    ),
                ),
                **common,  # type: ignore[arg-type]
            )
        )
    groups.append(
        PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=ImageRegion3D(
                graphic_type=hd.sr.GraphicTypeValues3D.POINT,
                graphic_data=np.asarray([d.center_lps_mm], dtype=np.float64),
                frame_of_reference_uid=str(layout.datasets[0].FrameOfReferenceUID),
            ),
            geometric_purpose=codes.CENTER,
            **common,  # type: ignore[arg-type]
        )
    )
    return groups


def _text(name: hd.sr.CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def _qualitative_evaluations(findings: list[Finding]) -> hd.sr.ContainerContentItem:
    """TID 1500 row 12 "Qualitative Evaluations": the study-level findings.

    Not a measurement group: OHIF 3.13 crashes on a group without an image region.  Row 12
    admits CODE (presence, pattern) and TEXT items (row 13), so the counts are TEXT here;
    the per-CMB groups remain the machine-readable record (one tracking UID per CMB).
    """
    summary = summary_of(findings)
    items: list[hd.sr.ContentItem] = [
        hd.sr.CodeContentItem(
            name=codes.CMB_PRESENCE,
            value=codes.PRESENT if summary.total else codes.ABSENT,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
        hd.sr.CodeContentItem(
            name=codes.PATTERN,
            value=codes.PATTERN_VALUES[summary.pattern],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
        _text(codes.NUMBER_OF_LESIONS, str(summary.total)),
    ]
    for category, n in summary.by_mars.items():
        if category is None and n == 0:
            continue
        items.append(_text(codes.MARS_COUNT[category], str(n)))
    for band, n in summary.by_certainty.items():
        items.append(_text(codes.CERTAINTY_COUNT[band], str(n)))
    for (hemisphere, lobe), n in summary.by_lobe.items():
        if lobe == "unknown":
            continue  # counted in the total, no finding site to say
        items.append(_text(codes.NUMBER_OF_LESIONS, f"{f'{hemisphere} {lobe}'.strip()}: {n}"))
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _placeholder(identity: Identity) -> MeasurementsAndQualitativeEvaluations:
    """A group that only exists for highdicom's constructor; removed before writing."""
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=identity.uids.summary_tracking(), identifier="placeholder"
        )
    )


def build_sr(
    identity: Identity,
    layout: SourceLayout,
    findings: list[Finding],
    seg: Dataset | None,
) -> Comprehensive3DSR:
    """The TID 1500 SR (not yet written).  ``seg`` is the SEG it references, if any."""
    observer = ObserverContext(
        observer_type=pd_codes.DCM.Device,  # CID 270, DCM 121007
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=identity.uids.device(),
            name="cmb-detect",
            manufacturer_name="cmb-detect",
            model_name=identity.model_name,
            serial_number=identity.serial_number,
        ),
    )
    groups: list[_Group] = []
    for finding in findings:
        groups.extend(_finding_groups(finding, identity, layout, seg))
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=codes.PROCEDURE_BRAIN_MRI,
        # highdicom requires one group; without CMBs the (empty) container is dropped below
        imaging_measurements=groups or [_placeholder(identity)],
        title=codes.IMAGING_MEASUREMENT_REPORT,
    )
    root = report[0]
    if not groups:
        # TID 1500: at least one of rows 6 (Imaging Measurements), 10 or 12 is present.
        root.ContentSequence = hd.sr.ContentSequence(
            [i for i in root.ContentSequence if i.name != pd_codes.DCM.ImagingMeasurements]
        )
    root.ContentSequence.append(_qualitative_evaluations(findings))
    evidence = list(layout.datasets) + ([seg] if seg is not None else [])
    sr = Comprehensive3DSR(
        evidence=evidence,
        content=root,
        series_instance_uid=identity.uids.series("sr"),
        series_number=SERIES_NUMBERS["sr"],
        sop_instance_uid=identity.uids.instance("sr"),
        instance_number=1,
        manufacturer="cmb-detect",
        is_complete=True,
        is_final=False,  # an algorithm's result, not a verified clinical report
        is_verified=False,
        series_description=identity.series_description("sr"),
        specific_character_set=character_set_of(layout.datasets[0]),
    )
    add_ihe_equipment(sr, identity, private_codes=True)
    return sr
