"""DICOM Segmentation (BINARY) of the kept CMBs, one segment per CMB.

One segment per lesion (not one segment for all) because viewers (OHIF,
3D Slicer) list segments by label: a reader can jump to "CMB 3 lobar",
hide it, and find the same number in the SR and the PDF.  Each segment
carries the lesion's Tracking ID/UID (the SR's measurement groups carry the
same), a display colour by MARS category, and an anatomic region.

Frames: only frames that contain a CMB are encoded (highdicom's
``omit_empty_frames``), each with a Derivation Image reference to its source
instance (and frame, for Enhanced MR).  Sparse SEGs are read correctly by
OHIF v3, 3D Slicer/dcmqi and highdicom, and a full-size SEG of a 3D SWI
(hundreds of empty frames per segment) would be 100x larger for nothing.

Empty result policy: when no CMB is kept, *no SEG is written*; the SR (and
PDF) state explicitly that no microbleed was found.  A SEG with a segment
and only empty frames draws nothing, and several PACS/viewers reject SEGs
without non-empty frames.
"""

from __future__ import annotations

import copy
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as pd_codes

from model.dicom_out import codes
from model.dicom_out.common import SERIES_NUMBERS, Identity, add_ihe_equipment, character_set_of
from model.dicom_out.findings import Finding
from model.dicom_out.geometry import SourceFrame, SourceLayout
from model.errors import GeometryError

__all__ = ["algorithm_identification", "build_seg"]


def algorithm_identification(identity: Identity) -> hd.AlgorithmIdentificationSequence:
    model = identity.result.model
    return hd.AlgorithmIdentificationSequence(
        name=identity.model_name,
        family=pd_codes.DCM.ArtificialIntelligence,  # CID 7162, DCM 123110
        version=model.version[:64] or "unknown",
        source="cmb-detect",
        parameters={"model_sha256": model.sha256[:64]},
    )


def _segment(finding: Finding, identity: Identity) -> hd.seg.SegmentDescription:
    d = finding.detection
    site = codes.anatomy_for(d.lobe) or codes.anatomy_for(d.region) or codes.BRAIN
    return hd.seg.SegmentDescription(
        segment_number=finding.number,
        segment_label=finding.label,
        segmented_property_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=codes.HEMORRHAGE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_identification(identity),
        tracking_uid=identity.uids.tracking(d.id),
        tracking_id=finding.name,
        anatomic_regions=[site],
        display_color=hd.color.CIELabColor.from_rgb(*finding.colour),  # 0-255 sRGB
    )


def segment_map(findings: list[Finding], labels: np.ndarray) -> np.ndarray:
    """Label-map array with segment numbers: detection id → finding number, others → 0."""
    if not findings:
        raise ValueError("a SEG needs at least one finding (see the empty-result policy)")
    top = int(labels.max(initial=0))
    lut = np.zeros(max(top, max(f.detection.id for f in findings)) + 1, dtype=np.uint16)
    for f in findings:
        lut[f.detection.id] = f.number
    out = lut[np.clip(labels.astype(np.int64), 0, len(lut) - 1)]
    dtype = np.uint8 if len(findings) < 256 else np.uint16
    return out.astype(dtype)


def _pixel_measures(ds: Dataset, frame: SourceFrame) -> hd.PixelMeasuresSequence:
    thickness = None
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if groups in ds:
            item = ds[groups].value[(frame.frame_number or 1) - 1 if "PerFrame" in groups else 0]
            if "PixelMeasuresSequence" in item:
                thickness = item.PixelMeasuresSequence[0].get("SliceThickness")
                break
    return hd.PixelMeasuresSequence(
        pixel_spacing=frame.pixel_spacing,
        slice_thickness=float(thickness) if thickness is not None else None,
    )


def _keep_own_source_frames(seg: Dataset, layout: SourceLayout) -> None:
    """Reduce each SEG frame's Derivation Image references to the volume's own source frame.

    highdicom matches planes to source frames by position; in a file with
    magnitude and phase frames at the same positions it references both.
    """
    volume = layout.volume
    for item in seg.PerFrameFunctionalGroupsSequence:
        ipp = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        k = round(float(volume.lps_to_index(ipp)[0]))
        own = layout.frame_at(k)
        for derivation in item.DerivationImageSequence:
            kept = [
                src
                for src in derivation.SourceImageSequence
                if src.ReferencedSOPInstanceUID == own.sop_instance_uid
                and int(src.get("ReferencedFrameNumber", 0)) == own.frame_number
            ]
            if not kept:
                raise GeometryError(
                    f"highdicom did not reference frame {own.frame_number} for SEG plane {k}"
                )
            derivation.SourceImageSequence = kept


def _highdicom_view(ds: Dataset, layout: SourceLayout) -> Dataset:
    """The source as highdicom expects it: pixel measures and orientation in the shared group.

    highdicom 0.28 reads Pixel Measures (and Plane Orientation) of a multi-frame
    source from its Shared Functional Groups only; Philips Enhanced MR puts them
    in the Per-frame groups.  When every frame of the volume agrees, this returns
    a new top-level dataset (same elements, same UIDs; the source is not
    modified) whose shared group carries them.
    """
    if not layout.multiframe:
        return ds
    shared = (
        ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    )
    missing = [
        name
        for name in ("PixelMeasuresSequence", "PlaneOrientationSequence")
        if shared is None or name not in shared
    ]
    if not missing:
        return ds
    if len({(fr.pixel_spacing, fr.orientation) for fr in layout.frames}) != 1:
        raise GeometryError(
            f"frames of {ds.SOPInstanceUID} differ in pixel spacing or orientation; "
            "one SEG cannot describe them"
        )
    first = layout.frames[0]
    new_shared = copy.deepcopy(shared) if shared is not None else Dataset()
    if "PixelMeasuresSequence" in missing:
        per = ds.PerFrameFunctionalGroupsSequence[first.frame_number - 1]  # type: ignore[operator]
        new_shared.PixelMeasuresSequence = copy.deepcopy(per.PixelMeasuresSequence)
    if "PlaneOrientationSequence" in missing:
        item = Dataset()
        item.ImageOrientationPatient = list(first.orientation)
        new_shared.PlaneOrientationSequence = [item]
    view = Dataset()
    for element in ds:
        if element.keyword != "SharedFunctionalGroupsSequence":
            view.add(element)
    view.SharedFunctionalGroupsSequence = [new_shared]
    return view


def build_seg(
    identity: Identity, layout: SourceLayout, findings: list[Finding]
) -> hd.seg.Segmentation:
    """The SEG object (not yet written)."""
    result = identity.result
    seg_map = segment_map(findings, np.asarray(result.labels.array))
    missing = [f.name for f in findings if not np.any(seg_map == f.number)]
    if missing:
        raise ValueError(f"findings without voxels in Result.labels: {', '.join(missing)}")
    source = layout.datasets[0]
    if layout.multiframe:
        # Explicit planes: only the volume's frames (a multi-frame file may hold
        # other image kinds at the same positions, which highdicom's implicit
        # one-plane-per-source-frame mode refuses as duplicate positions).
        first = layout.frames[0]
        frames = [layout.frame_at(k) for k in range(result.labels.shape[0])]
        planes = np.stack([fr.take(seg_map) for fr in frames])
        spatial: dict[str, Any] = {
            "plane_positions": [
                hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, fr.position)
                for fr in frames
            ],
            "plane_orientation": hd.PlaneOrientationSequence(
                hd.CoordinateSystemNames.PATIENT, first.orientation
            ),
            "pixel_measures": _pixel_measures(source, first),
        }
    else:
        planes = layout.planes_array(seg_map)
        spatial = {}
    seg = hd.seg.Segmentation(
        source_images=[_highdicom_view(ds, layout) for ds in layout.datasets],
        pixel_array=planes,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment(f, identity) for f in findings],
        series_instance_uid=identity.uids.series("seg"),
        series_number=SERIES_NUMBERS["seg"],
        sop_instance_uid=identity.uids.instance("seg"),
        instance_number=1,
        manufacturer="cmb-detect",
        manufacturer_model_name=identity.model_name,
        software_versions=identity.software_versions,  # type: ignore[arg-type]  # multi-valued LO
        device_serial_number=identity.serial_number,
        content_label="CMB",
        content_description="Cerebral microbleeds (automated)"[:64],
        series_description=identity.series_description("seg"),
        omit_empty_frames=True,
        specific_character_set=character_set_of(source),
        **spatial,
    )
    if layout.multiframe:
        _keep_own_source_frames(seg, layout)
    add_ihe_equipment(seg, identity)
    return seg
