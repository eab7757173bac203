"""DICOM series with a DICOM Segmentation (SEG) of the microbleeds.

Layout: any folder (or zip) holding one or more MR series and SEG objects that
reference them (ReferencedSeriesSequence), as PACS exports and 3D Slicer /
OHIF annotations produce.  The image is read with the project's own DICOM
reader (``model.dicom_in``), so the geometry is the one inference uses; the
SEG frames are mapped to the source slices by SOP Instance UID (highdicom).
All segments together form the lesion mask; instances are 26-connected
components.  Acquisition metadata come from the image series' headers.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.uid import SegmentationStorage

from model.dicom_in import load_studies
from model.errors import InputError
from model.series import Series
from training.datasets.common import ImportedCase, instance_labels, make_record


def _seg_files(src: Path) -> list[Path]:
    out = []
    for p in sorted(src.rglob("*")):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        except (pydicom.errors.InvalidDicomError, OSError):
            continue
        if ds.get("SOPClassUID") == SegmentationStorage:
            out.append(p)
    return out


def import_dicom_seg(src: str | Path, split: str = "train") -> list[ImportedCase]:
    src = Path(src)
    segs = _seg_files(src)
    if not segs:
        raise InputError(f"{src}: no DICOM SEG object found")
    series: dict[str, Series] = {}
    for study in load_studies([src]):
        for s in study.series:
            series.setdefault(s.series_instance_uid, s)
    cases = []
    for seg_path in segs:
        seg = hd.seg.segread(seg_path)
        refs = [r.SeriesInstanceUID for r in seg.get("ReferencedSeriesSequence", [])]
        target = next((series[u] for u in refs if u in series), None)
        if target is None:
            raise InputError(f"{seg_path}: the referenced series {refs} is not in {src}")
        image = target.load_volume()
        uids = [s.sop_instance_uid for s in image.slices]
        referenced = {uid for _, _, uid in seg.get_source_image_uids()}
        present = [u for u in uids if u in referenced]
        mask = np.zeros(image.shape, dtype=np.uint8)
        if present:
            pixels = seg.get_pixels_by_source_instance(
                present, combine_segments=True, relabel=True, assert_missing_frames_are_empty=True
            )
            rows = {u: k for k, u in enumerate(uids)}
            for u, plane in zip(present, pixels, strict=True):
                mask[rows[u]] = plane > 0
        labels = instance_labels(mask)
        info = target.info
        case_id = f"dicomseg-{info.series_instance_uid}"
        record = make_record(
            case_id,
            image,
            labels,
            source="dicom-seg",
            split=split,
            acquisition={
                "sequence": info.sequence_kind.value,
                "field_strength_t": info.field_strength_t,
                "echo_time_ms": info.echo_time_ms,
                "slice_thickness_mm": info.slice_thickness_mm,
                "acquisition_type": info.acquisition_type,
                "manufacturer": info.manufacturer,
            },
            extra={
                "source_id": info.series_instance_uid,
                "study_instance_uid": info.study_instance_uid,
                "seg_sop_instance_uid": str(seg.SOPInstanceUID),
            },
        )
        cases.append(ImportedCase(case_id, image, image.with_array(labels), record))
    return cases
