"""Comprehensive 3D SR, TID 1500 "Measurement Report", of the kept CMBs.

Per CMB (all groups share its Tracking Identifier "CMB n" and Tracking UID,
which are also the SEG segment's):

1. a *volumetric* group (TID 1411) referencing its SEG segment, with volume,
   diameter, probability, finding site (lobe/structure + laterality), the MARS
   category and the parcellation region (when no SEG is written, the same
   content as a TID 1501 group without an ROI reference);
2. a *planar* group (TID 1410) whose region is the centre as an SCOORD3D POINT
   in the source frame of reference;
3. a *planar* group whose region is a CIRCLE (SCOORD) on the source slice
   through the centre, diameter = the CMB's diameter, so that viewers that only
   draw TID 1500 image graphics (OHIF) show a marker where the CMB is.

Study level: one TID 1501 group "CMB summary" with the number of CMBs (total,
per MARS category, per lobe with laterality), the presence (Present/Absent:
an empty result says explicitly that no CMB was found) and the distribution
pattern.  Algorithm identification (TID 4019) is in every group; the observer
context is a device observer (TID 1004) for the algorithm.
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
    d = finding.detection
    tracking = TrackingIdentifier(uid=identity.uids.tracking(d.id), identifier=finding.name)
    common = dict(
        tracking_identifier=tracking,
        finding_type=codes.HEMORRHAGE,
        finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        algorithm_id=_algorithm(identity),
        finding_sites=_sites(finding),
    )
    groups: list[_Group] = []
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
                measurements=_measurements(finding),
                qualitative_evaluations=_evaluations(finding),
                **common,  # type: ignore[arg-type]
            )
        )
    else:
        groups.append(
            MeasurementsAndQualitativeEvaluations(
                measurements=_measurements(finding),
                qualitative_evaluations=_evaluations(finding),
                **common,  # type: ignore[arg-type]
            )
        )
    frame_of_reference = str(layout.datasets[0].FrameOfReferenceUID)
    groups.append(
        PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=ImageRegion3D(
                graphic_type=hd.sr.GraphicTypeValues3D.POINT,
                graphic_data=np.asarray([d.center_lps_mm], dtype=np.float64),
                frame_of_reference_uid=frame_of_reference,
            ),
            geometric_purpose=codes.CENTER,
            **common,  # type: ignore[arg-type]
        )
    )
    frame = layout.frame_through(d.center_lps_mm)
    row, col = frame.pixel_of(layout.volume, d.center_lps_mm)
    # SCOORD: (column, row), origin at the top-left corner of the top-left pixel
    # (PS3.3 C.18.6.1.1), so a pixel centre is index + 0.5.
    cx, cy = col + 0.5, row + 0.5
    radius_px = max(d.diameter_mm / 2.0 / min(frame.pixel_spacing), 1.0)
    groups.append(
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
            measurements=[
                Measurement(
                    name=codes.DIAMETER, value=round(float(d.diameter_mm), 3), unit=codes.MM
                )
            ],
            **common,  # type: ignore[arg-type]
        )
    )
    return groups


def _summary_group(
    findings: list[Finding], identity: Identity
) -> MeasurementsAndQualitativeEvaluations:
    summary = summary_of(findings)
    count = codes.NO_UNITS
    measurements = [Measurement(name=codes.NUMBER_OF_LESIONS, value=summary.total, unit=count)]
    for category, n in summary.by_mars.items():
        if category is None and n == 0:
            continue
        measurements.append(Measurement(name=codes.MARS_COUNT[category], value=n, unit=count))
    for (hemisphere, lobe), n in summary.by_lobe.items():
        if lobe == "unknown":
            continue  # counted in the total, no finding site to say
        site = codes.anatomy_for(lobe) or codes.lobe_value(lobe)
        measurements.append(
            Measurement(
                name=codes.NUMBER_OF_LESIONS,
                value=n,
                unit=count,
                finding_sites=[
                    FindingSite(anatomic_location=site, laterality=codes.laterality_for(hemisphere))
                ],
            )
        )
    evaluations = [
        QualitativeEvaluation(codes.CMB_PRESENCE, codes.PRESENT if summary.total else codes.ABSENT),
        QualitativeEvaluation(codes.PATTERN, codes.PATTERN_VALUES[summary.pattern]),
    ]
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=identity.uids.summary_tracking(), identifier="CMB summary"
        ),
        finding_type=codes.HEMORRHAGE,
        finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        algorithm_id=_algorithm(identity),
        finding_sites=[FindingSite(anatomic_location=codes.BRAIN)],
        measurements=measurements,
        qualitative_evaluations=evaluations,
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
    groups: list[_Group] = [_summary_group(findings, identity)]
    for finding in findings:
        groups.extend(_finding_groups(finding, identity, layout, seg))
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=codes.PROCEDURE_BRAIN_MRI,
        imaging_measurements=groups,
        title=codes.IMAGING_MEASUREMENT_REPORT,
    )
    evidence = list(layout.datasets) + ([seg] if seg is not None else [])
    sr = Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
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
