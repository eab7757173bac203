"""Shared machinery of the MR series writers: geometry, pixel quantization, headers.

Internal to `model.series_writer` (classic MR) and `model.series_writer_enhanced`
(Enhanced MR); use those modules' public functions.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from model.types import Volume
from model.vendor_profiles import KINDS, PROFILES, VendorProfile

__all__ = [
    "SUPPORTED_TRANSFER_SYNTAXES",
    "SliceGeometry",
    "StudyMeta",
    "add_common_attributes",
    "bits_stored",
    "compress",
    "deterministic_uid",
    "ds_str",
    "file_meta",
    "file_name",
    "geometry_of",
    "get_profile",
    "quantize",
]

SUPPORTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
)

_ORTHOGONALITY_TOL = 1e-4


def deterministic_uid(*parts: object) -> str:
    """A UID (pydicom's prefix) that depends only on ``parts``."""
    return str(generate_uid(entropy_srcs=[repr(p) for p in parts]))


@dataclass(frozen=True)
class StudyMeta:
    """Patient and study identity shared by every series of a generated study."""

    patient_name: str = "CMB^Synthetic"
    patient_id: str = "CMB0001"
    patient_birth_date: str = "19500101"
    patient_sex: str = "O"
    study_instance_uid: str = ""
    study_date: str = "20240101"
    study_time: str = "120000"
    accession_number: str = "ACC0001"
    study_description: str = "MR BRAIN"
    study_id: str = "1"
    frame_of_reference_uid: str = ""
    referring_physician_name: str = ""

    @classmethod
    def synthetic(cls, seed: int = 0, **overrides: str) -> StudyMeta:
        """A study with UIDs derived from ``seed`` (same seed, same UIDs)."""
        values: dict[str, str] = {
            "patient_id": f"CMB{seed:04d}",
            "accession_number": f"ACC{seed:04d}",
            "study_instance_uid": deterministic_uid("study", seed),
            "frame_of_reference_uid": deterministic_uid("for", seed),
        }
        values.update(overrides)
        return cls(**values)

    def resolved(self, seed: int) -> StudyMeta:
        """Fill empty UIDs deterministically from ``seed``."""
        study_uid = self.study_instance_uid or deterministic_uid("study", seed)
        for_uid = self.frame_of_reference_uid or deterministic_uid("for", study_uid)
        return StudyMeta(
            **{
                **self.__dict__,
                "study_instance_uid": study_uid,
                "frame_of_reference_uid": for_uid,
            }
        )


@dataclass(frozen=True)
class SliceGeometry:
    row_cosine: tuple[float, float, float]  # IOP[0:3]: direction of increasing column index
    col_cosine: tuple[float, float, float]  # IOP[3:6]: direction of increasing row index
    pixel_spacing: tuple[float, float]  # (between rows, between columns)
    slice_spacing: float
    positions: tuple[tuple[float, ...], ...]
    normal: tuple[float, float, float]
    slice_locations: tuple[float, ...] = field(default=())


def geometry_of(volume: Volume) -> SliceGeometry:
    a = volume.affine
    slice_step, row_step, col_step = a[:3, 0], a[:3, 1], a[:3, 2]
    dr, dc, ds = (float(np.linalg.norm(v)) for v in (row_step, col_step, slice_step))
    row_cos = col_step / dc
    col_cos = row_step / dr
    if abs(float(row_cos @ col_cos)) > _ORTHOGONALITY_TOL:
        raise ValueError("volume affine has non-orthogonal in-plane axes; DICOM cannot hold it")
    normal = np.cross(row_cos, col_cos)
    if abs(abs(float(slice_step @ normal)) / ds - 1.0) > _ORTHOGONALITY_TOL:
        raise ValueError(
            "volume affine has a slice axis that is not along the plane normal (sheared grid)"
        )
    nk = volume.shape[0]
    positions = tuple(tuple(float(x) for x in a[:3, 3] + k * slice_step) for k in range(nk))
    locations = tuple(float(np.dot(p, normal)) for p in positions)
    return SliceGeometry(
        row_cosine=(float(row_cos[0]), float(row_cos[1]), float(row_cos[2])),
        col_cosine=(float(col_cos[0]), float(col_cos[1]), float(col_cos[2])),
        pixel_spacing=(dr, dc),
        slice_spacing=ds,
        positions=positions,
        normal=(float(normal[0]), float(normal[1]), float(normal[2])),
        slice_locations=locations,
    )


def quantize(
    array: npt.NDArray[np.floating] | npt.NDArray[np.integer],
) -> tuple[npt.NDArray[np.uint16], float, float]:
    """uint16 stored values plus (slope, intercept) that reproduce ``array``."""
    arr = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("volume contains non-finite values")
    lo, hi = float(arr.min()), float(arr.max())
    if np.all(arr == np.round(arr)) and lo >= 0 and hi <= 65535:
        return arr.astype(np.uint16), 1.0, 0.0
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    stored = np.clip(np.round((arr - lo) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, lo


def ds_str(x: float) -> str:
    """A DS string (at most 16 characters) for ``x``."""
    s = f"{x:.10g}"
    if len(s) > 16:
        s = f"{x:.8g}"
    return s


def bits_stored(stored: npt.NDArray[np.uint16]) -> int:
    return 12 if int(stored.max(initial=0)) <= 4095 else 16


def file_meta(sop_class: str, sop_uid: str, ts: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(ExplicitVRLittleEndian)
    meta.ImplementationClassUID = UID(deterministic_uid("cmb-detect", "implementation"))
    meta.ImplementationVersionName = "CMB_DETECT_01"
    return meta


def add_common_attributes(
    ds: Dataset,
    study: StudyMeta,
    profile: VendorProfile,
    kind: str,
    series_uid: str,
    series_number: int,
    te: float,
    field_t: float,
    patient_position: str,
) -> None:
    """Patient, study, series, equipment and MR acquisition attributes."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.SeriesDate = study.study_date
    ds.SeriesTime = study.study_time
    ds.ContentDate = study.study_date
    ds.ContentTime = study.study_time
    ds.AcquisitionDate = study.study_date
    ds.AcquisitionTime = study.study_time
    ds.AccessionNumber = study.accession_number
    ds.StudyDescription = study.study_description
    ds.StudyID = study.study_id
    ds.ReferringPhysicianName = study.referring_physician_name
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = profile.series_description(kind)
    ds.ProtocolName = profile.protocol_name
    ds.PatientPosition = patient_position
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = profile.manufacturer
    ds.ManufacturerModelName = profile.model_name
    ds.SoftwareVersions = profile.software_version
    ds.InstitutionName = "CMB Synthetic Hospital"
    ds.StationName = "CMBSYN01"
    ds.DeviceSerialNumber = "0001"
    ds.ScanningSequence = list(profile.scanning_sequence)
    ds.SequenceVariant = list(profile.sequence_variant)
    ds.ScanOptions = list(profile.scan_options) if profile.scan_options else ""
    ds.MRAcquisitionType = profile.acquisition_type
    if profile.sequence_name:
        ds.SequenceName = profile.sequence_name
    ds.RepetitionTime = ds_str(profile.repetition_time_ms)
    ds.EchoTime = ds_str(te)
    if profile.inversion_time_ms is not None:
        ds.InversionTime = ds_str(profile.inversion_time_ms)
    ds.EchoTrainLength = 1
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = ds_str(42.577478 * field_t)
    ds.ImagedNucleus = "1H"
    ds.MagneticFieldStrength = ds_str(field_t)
    ds.FlipAngle = ds_str(profile.flip_angle_deg)
    ds.PercentSampling = "100"
    ds.PercentPhaseFieldOfView = "100"
    ds.PixelBandwidth = "120"
    ds.ReceiveCoilName = profile.coil_name
    ds.TransmitCoilName = "Body"
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.PatientWeight = "70"
    ds.BodyPartExamined = "BRAIN"
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 0


def compress(ds: Dataset, transfer_syntax: str) -> None:
    """Re-encode ``ds`` pixel data in place with the given transfer syntax."""
    if transfer_syntax == ExplicitVRLittleEndian:
        return
    if transfer_syntax == JPEG2000Lossless and min(int(ds.Rows), int(ds.Columns)) < 32:
        # pylibjpeg-openjpeg always uses 6 DWT resolutions, which needs >= 32 pixels.
        raise ValueError("JPEG 2000 encoding needs images of at least 32 x 32 pixels")
    if transfer_syntax in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        ds.compress(transfer_syntax, generate_instance_uid=False)
        return
    if transfer_syntax == JPEGLosslessSV1:
        # No Python encoder for JPEG Lossless (process 14); dcmtk's dcmcjpeg is
        # the reference implementation.
        _compress_with_dcmcjpeg(ds)
        return
    raise ValueError(
        f"unsupported transfer syntax {transfer_syntax}; use one of {SUPPORTED_TRANSFER_SYNTAXES}"
    )


def _compress_with_dcmcjpeg(ds: Dataset) -> None:
    exe = shutil.which("dcmcjpeg")
    if exe is None:
        raise RuntimeError(
            "JPEG Lossless encoding needs dcmtk's dcmcjpeg on PATH (apt-get install dcmtk)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        ds.save_as(src, enforce_file_format=True)
        proc = subprocess.run(
            [exe, "+e1", "+un", str(src), str(dst)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"dcmcjpeg failed: {proc.stderr.strip() or proc.stdout.strip()}")
        new = pydicom.dcmread(dst)
    ds.file_meta.TransferSyntaxUID = new.file_meta.TransferSyntaxUID
    ds.PixelData = new.PixelData
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    for kw in ("LossyImageCompression",):
        if kw in new:
            setattr(ds, kw, new.get(kw))


def file_name(sop_uid: str) -> str:
    """A file name that does not reveal the slice order (PACS exports look like this)."""
    return "IM_" + hashlib.sha1(sop_uid.encode()).hexdigest()[:12].upper() + ".dcm"


def get_profile(flavour: str, kind: str) -> VendorProfile:
    if flavour not in PROFILES:
        raise ValueError(f"unknown flavour {flavour!r}; expected one of {sorted(PROFILES)}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    return PROFILES[flavour]
