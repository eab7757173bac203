"""Write a `Volume` as a realistic MR DICOM series (classic or Enhanced MR).

Used by the demo, the tests, the synthetic-data generator and anyone who
needs MR DICOM that looks like a given scanner's export.  The geometry comes
from ``volume.affine`` (any orientation: oblique, feet-first, negated
cosines); the headers follow each vendor's conventions for the sequence and
image kind (see ``model/vendor_profiles.py`` and docs/input-formats.md).

Pixel data are unsigned 16-bit with RescaleSlope/RescaleIntercept chosen so
that ``stored * slope + intercept`` reproduces the volume (exactly for
integer-valued volumes in [0, 65535], within ``slope / 2`` otherwise).
UIDs are deterministic functions of ``seed`` and the series parameters, so a
generated study is reproducible byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from model.series_writer_common import (
    SUPPORTED_TRANSFER_SYNTAXES,
    StudyMeta,
    add_common_attributes,
    bits_stored,
    compress,
    deterministic_uid,
    ds_str,
    file_meta,
    file_name,
    geometry_of,
    get_profile,
    quantize,
)
from model.series_writer_enhanced import EnhancedStack, write_enhanced
from model.types import Volume
from model.vendor_profiles import KINDS

__all__ = [
    "KINDS",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "EnhancedStack",
    "StudyMeta",
    "deterministic_uid",
    "write_enhanced",
    "write_series",
]


def write_series(
    volume: Volume,
    out_dir: Path,
    *,
    flavour: str = "siemens_swi",
    kind: str = "magnitude",
    study: StudyMeta | None = None,
    series_number: int = 1,
    series_instance_uid: str | None = None,
    echo_time_ms: float | None = None,
    field_strength_t: float | None = None,
    enhanced: bool = False,
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int = 0,
    echo_number: int = 1,
    patient_position: str = "HFS",
    slice_thickness_mm: float | None = None,
) -> list[Path]:
    """Write ``volume`` as one MR series under ``out_dir``; return the files in slice order.

    ``enhanced=True`` writes one Enhanced MR Image Storage multi-frame file
    instead of one classic MR Image Storage file per slice.  Calling this
    twice with the same ``series_instance_uid`` and different
    ``echo_number``/``echo_time_ms`` (and ``seed``) writes a multi-echo series
    the way Siemens does (same positions, instance numbers restart per echo).
    """
    profile = get_profile(flavour, kind)
    if enhanced:
        return write_enhanced(
            [
                EnhancedStack(
                    volume=volume, kind=kind, echo_time_ms=echo_time_ms, echo_number=echo_number
                )
            ],
            out_dir,
            flavour=flavour,
            study=study,
            series_number=series_number,
            series_instance_uid=series_instance_uid,
            field_strength_t=field_strength_t,
            transfer_syntax=transfer_syntax,
            seed=seed,
            patient_position=patient_position,
            slice_thickness_mm=slice_thickness_mm,
        )
    study = (study or StudyMeta.synthetic(seed)).resolved(seed)
    geo = geometry_of(volume)
    te = profile.echo_time_ms if echo_time_ms is None else float(echo_time_ms)
    field_t = profile.field_strength_t if field_strength_t is None else float(field_strength_t)
    series_uid = series_instance_uid or deterministic_uid(
        "series", seed, study.study_instance_uid, series_number, flavour, kind
    )
    stored, slope, intercept = quantize(volume.array)
    bits = bits_stored(stored)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for k in range(volume.shape[0]):
        sop_uid = deterministic_uid("sop", seed, series_uid, echo_number, k)
        ds = Dataset()
        ds.file_meta = file_meta(MRImageStorage, sop_uid, transfer_syntax)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.InstanceCreationDate = study.study_date
        ds.InstanceCreationTime = study.study_time
        ds.ImageType = list(profile.image_type(kind))
        add_common_attributes(
            ds, study, profile, kind, series_uid, series_number, te, field_t, patient_position
        )
        ds.SliceThickness = ds_str(slice_thickness_mm or geo.slice_spacing)
        ds.SpacingBetweenSlices = ds_str(geo.slice_spacing)
        ds.EchoNumbers = echo_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [ds_str(x) for x in geo.positions[k]]
        ds.ImageOrientationPatient = [ds_str(x) for x in (*geo.row_cosine, *geo.col_cosine)]
        ds.SliceLocation = ds_str(geo.slice_locations[k])
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.PixelSpacing = [ds_str(geo.pixel_spacing[0]), ds_str(geo.pixel_spacing[1])]
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.RescaleIntercept = ds_str(intercept)
        ds.RescaleSlope = ds_str(slope)
        ds.RescaleType = "US"
        ds.WindowCenter = ds_str(intercept + slope * float(stored.mean()))
        ds.WindowWidth = ds_str(max(slope * float(np.ptp(stored)), 1.0))
        profile.add_private(ds, kind)
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        compress(ds, transfer_syntax)
        path = out_dir / file_name(sop_uid)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
