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

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from model.types import Volume
from model.vendor_profiles import KINDS, PROFILES, VendorProfile

__all__ = [
    "KINDS",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "EnhancedStack",
    "StudyMeta",
    "deterministic_uid",
    "write_enhanced",
    "write_series",
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
class EnhancedStack:
    """One stack of frames inside an Enhanced MR file (one image kind, one echo)."""

    volume: Volume
    kind: str = "magnitude"
    echo_time_ms: float | None = None
    echo_number: int = 1


@dataclass(frozen=True)
class _Geometry:
    row_cosine: tuple[float, float, float]  # IOP[0:3]: direction of increasing column index
    col_cosine: tuple[float, float, float]  # IOP[3:6]: direction of increasing row index
    pixel_spacing: tuple[float, float]  # (between rows, between columns)
    slice_spacing: float
    positions: tuple[tuple[float, ...], ...]
    normal: tuple[float, float, float]
    slice_locations: tuple[float, ...] = field(default=())


def _geometry(volume: Volume) -> _Geometry:
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
    return _Geometry(
        row_cosine=(float(row_cos[0]), float(row_cos[1]), float(row_cos[2])),
        col_cosine=(float(col_cos[0]), float(col_cos[1]), float(col_cos[2])),
        pixel_spacing=(dr, dc),
        slice_spacing=ds,
        positions=positions,
        normal=(float(normal[0]), float(normal[1]), float(normal[2])),
        slice_locations=locations,
    )


def _quantize(
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


def _ds(x: float) -> str:
    """A DS string (at most 16 characters) for ``x``."""
    s = f"{x:.10g}"
    if len(s) > 16:
        s = f"{x:.8g}"
    return s


def _bits_stored(stored: npt.NDArray[np.uint16]) -> int:
    return 12 if int(stored.max(initial=0)) <= 4095 else 16


def _file_meta(sop_class: str, sop_uid: str, ts: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(ExplicitVRLittleEndian)
    meta.ImplementationClassUID = UID(deterministic_uid("cmb-detect", "implementation"))
    meta.ImplementationVersionName = "CMB_DETECT_01"
    return meta


def _common(
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
    ds.RepetitionTime = _ds(profile.repetition_time_ms)
    ds.EchoTime = _ds(te)
    if profile.inversion_time_ms is not None:
        ds.InversionTime = _ds(profile.inversion_time_ms)
    ds.EchoTrainLength = 1
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = _ds(42.577478 * field_t)
    ds.ImagedNucleus = "1H"
    ds.MagneticFieldStrength = _ds(field_t)
    ds.FlipAngle = _ds(profile.flip_angle_deg)
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


def _compress(ds: Dataset, transfer_syntax: str) -> None:
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


def _file_name(sop_uid: str) -> str:
    """A file name that does not reveal the slice order (PACS exports look like this)."""
    return "IM_" + hashlib.sha1(sop_uid.encode()).hexdigest()[:12].upper() + ".dcm"


def _profile(flavour: str, kind: str) -> VendorProfile:
    if flavour not in PROFILES:
        raise ValueError(f"unknown flavour {flavour!r}; expected one of {sorted(PROFILES)}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    return PROFILES[flavour]


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
    profile = _profile(flavour, kind)
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
    geo = _geometry(volume)
    te = profile.echo_time_ms if echo_time_ms is None else float(echo_time_ms)
    field_t = profile.field_strength_t if field_strength_t is None else float(field_strength_t)
    series_uid = series_instance_uid or deterministic_uid(
        "series", seed, study.study_instance_uid, series_number, flavour, kind
    )
    stored, slope, intercept = _quantize(volume.array)
    bits = _bits_stored(stored)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for k in range(volume.shape[0]):
        sop_uid = deterministic_uid("sop", seed, series_uid, echo_number, k)
        ds = Dataset()
        ds.file_meta = _file_meta(MRImageStorage, sop_uid, transfer_syntax)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.InstanceCreationDate = study.study_date
        ds.InstanceCreationTime = study.study_time
        ds.ImageType = list(profile.image_type(kind))
        _common(ds, study, profile, kind, series_uid, series_number, te, field_t, patient_position)
        ds.SliceThickness = _ds(slice_thickness_mm or geo.slice_spacing)
        ds.SpacingBetweenSlices = _ds(geo.slice_spacing)
        ds.EchoNumbers = echo_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(x) for x in geo.positions[k]]
        ds.ImageOrientationPatient = [_ds(x) for x in (*geo.row_cosine, *geo.col_cosine)]
        ds.SliceLocation = _ds(geo.slice_locations[k])
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.PixelSpacing = [_ds(geo.pixel_spacing[0]), _ds(geo.pixel_spacing[1])]
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleType = "US"
        ds.WindowCenter = _ds(intercept + slope * float(stored.mean()))
        ds.WindowWidth = _ds(max(slope * float(np.ptp(stored)), 1.0))
        profile.add_private(ds, kind)
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        _compress(ds, transfer_syntax)
        path = out_dir / _file_name(sop_uid)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _frame_type(profile: VendorProfile, kind: str) -> list[str]:
    """FrameType/ImageType of Enhanced MR: 4 values, value 3 from the profile's kind."""
    image_type = profile.image_type(kind)
    derived = image_type[0] if image_type else "ORIGINAL"
    value3 = {"magnitude": "NONE", "phase": "NONE", "minip": "MINIP", "mip": "MIP"}[kind]
    if profile.swi:
        value3 = "SWI" if kind == "magnitude" else value3
    return [derived, "PRIMARY", value3, "NONE"]


def write_enhanced(
    stacks: Sequence[EnhancedStack],
    out_dir: Path,
    *,
    flavour: str = "philips_swip",
    study: StudyMeta | None = None,
    series_number: int = 1,
    series_instance_uid: str | None = None,
    field_strength_t: float | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int = 0,
    patient_position: str = "HFS",
    slice_thickness_mm: float | None = None,
) -> list[Path]:
    """Write one Enhanced MR Image Storage file holding every stack's frames.

    Several stacks (magnitude + phase, or several echoes) go into one file, as
    Philips exports them; all must share the in-plane grid.  Frames are stored
    stack after stack in slice order; the per-frame functional groups carry
    position, echo time and magnitude/phase (``ComplexImageComponent``).
    """
    if not stacks:
        raise ValueError("write_enhanced needs at least one stack")
    profile = _profile(flavour, stacks[0].kind)
    for st in stacks:
        _profile(flavour, st.kind)
        if st.volume.shape[1:] != stacks[0].volume.shape[1:]:
            raise ValueError("all stacks of an enhanced file need the same rows and columns")
    study = (study or StudyMeta.synthetic(seed)).resolved(seed)
    field_t = profile.field_strength_t if field_strength_t is None else float(field_strength_t)
    series_uid = series_instance_uid or deterministic_uid(
        "series", seed, study.study_instance_uid, series_number, flavour, "enhanced"
    )
    sop_uid = deterministic_uid("sop-enhanced", seed, series_uid)
    all_values = np.concatenate([np.asarray(s.volume.array, np.float64).ravel() for s in stacks])
    _, slope, intercept = _quantize(all_values)
    first_geo = _geometry(stacks[0].volume)
    te0 = stacks[0].echo_time_ms if stacks[0].echo_time_ms is not None else profile.echo_time_ms

    ds = Dataset()
    ds.file_meta = _file_meta(EnhancedMRImageStorage, sop_uid, transfer_syntax)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = study.study_date
    ds.InstanceCreationTime = study.study_time
    _common(
        ds,
        study,
        profile,
        stacks[0].kind,
        series_uid,
        series_number,
        te0,
        field_t,
        patient_position,
    )
    kinds = {s.kind for s in stacks}
    ds.ImageType = (
        _frame_type(profile, stacks[0].kind)
        if len(kinds) == 1
        else ["ORIGINAL", "PRIMARY", "MIXED", "NONE"]
    )
    # Enhanced MR keeps these in functional groups / other modules, not at top level.
    for kw in (
        "EchoTime",
        "RepetitionTime",
        "FlipAngle",
        "ScanningSequence",
        "SequenceVariant",
        "ScanOptions",
        "SequenceName",
        "InversionTime",
        "EchoTrainLength",
        "NumberOfAverages",
        "PercentSampling",
        "PercentPhaseFieldOfView",
        "PixelBandwidth",
        "ReceiveCoilName",
        "TransmitCoilName",
        "InPlanePhaseEncodingDirection",
        "ImagedNucleus",
        "ImagingFrequency",
    ):
        if kw in ds:
            del ds[kw]
    ds.PulseSequenceName = profile.pulse_sequence_name
    ds.EchoPulseSequence = "GRADIENT"
    ds.MultiPlanarExcitation = "NO"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    ds.SteadyStatePulseSequence = "NONE"
    ds.EchoPlanarPulseSequence = "NO"
    ds.SaturationRecovery = "NO"
    ds.SpectrallySelectedSuppression = "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.SegmentedKSpaceTraversal = "SINGLE"
    ds.RectilinearPhaseEncodeReordering = "LINEAR"
    ds.CoverageOfKSpace = "FULL"
    ds.NumberOfKSpaceTrajectories = 1
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.ContentQualification = "PRODUCT"
    ds.AcquisitionContrast = "T2_STAR" if profile.t2star_like else "T1"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MIXED" if len(kinds) > 1 else _complex(stacks[0].kind)
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionDateTime = study.study_date + study.study_time
    ds.AcquisitionDuration = 0.0
    ds.AcquisitionContextSequence = DicomSequence()
    for kw in ("AcquisitionDate", "AcquisitionTime"):
        del ds[kw]
    ds.InstanceNumber = 1
    ds.ContentDate = study.study_date
    ds.Rows, ds.Columns = stacks[0].volume.shape[1], stacks[0].volume.shape[2]

    dim_org_uid = deterministic_uid("dim-org", sop_uid)
    ds.DimensionOrganizationSequence = DicomSequence([Dataset()])
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = dim_org_uid
    ds.DimensionIndexSequence = DicomSequence()
    for ptr, group in (
        ("StackID", "FrameContentSequence"),
        ("InStackPositionNumber", "FrameContentSequence"),
        ("EffectiveEchoTime", "MREchoSequence"),
    ):
        item = Dataset()
        item.DimensionOrganizationUID = dim_org_uid
        item.DimensionIndexPointer = pydicom.datadict.tag_for_keyword(ptr)
        item.FunctionalGroupPointer = pydicom.datadict.tag_for_keyword(group)
        ds.DimensionIndexSequence.append(item)

    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [_ds(first_geo.pixel_spacing[0]), _ds(first_geo.pixel_spacing[1])]
    pm.SliceThickness = _ds(slice_thickness_mm or first_geo.slice_spacing)
    pm.SpacingBetweenSlices = _ds(first_geo.slice_spacing)
    shared.PixelMeasuresSequence = DicomSequence([pm])
    po = Dataset()
    po.ImageOrientationPatient = [_ds(x) for x in (*first_geo.row_cosine, *first_geo.col_cosine)]
    shared.PlaneOrientationSequence = DicomSequence([po])
    timing = Dataset()
    timing.RepetitionTime = profile.repetition_time_ms
    timing.FlipAngle = profile.flip_angle_deg
    timing.EchoTrainLength = 1
    timing.RFEchoTrainLength = 0
    timing.GradientEchoTrainLength = 1
    sar = Dataset()
    sar.SpecificAbsorptionRateDefinition = "IEC_WHOLE_BODY"
    sar.SpecificAbsorptionRateValue = 0.1
    timing.SpecificAbsorptionRateSequence = DicomSequence([sar])
    mode = Dataset()
    mode.OperatingModeType = "STATIC FIELD"
    mode.OperatingMode = "IEC_NORMAL"
    timing.OperatingModeSequence = DicomSequence([mode])
    shared.MRTimingAndRelatedParametersSequence = DicomSequence([timing])
    pvt = Dataset()
    pvt.RescaleIntercept = _ds(intercept)
    pvt.RescaleSlope = _ds(slope)
    pvt.RescaleType = "US"
    shared.PixelValueTransformationSequence = DicomSequence([pvt])
    _add_shared_mr_macros(shared, profile)
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

    frames: list[npt.NDArray[np.uint16]] = []
    per_frame = DicomSequence()
    for stack_index, st in enumerate(stacks, start=1):
        geo = _geometry(st.volume)
        if not np.allclose(
            geo.row_cosine + geo.col_cosine, first_geo.row_cosine + first_geo.col_cosine, atol=1e-6
        ):
            raise ValueError("all stacks of an enhanced file need the same orientation")
        te = st.echo_time_ms if st.echo_time_ms is not None else profile.echo_time_ms
        vol = np.asarray(st.volume.array, np.float64)
        stored = np.clip(np.round((vol - intercept) / slope), 0, 65535).astype(np.uint16)
        for k in range(st.volume.shape[0]):
            item = Dataset()
            fc = Dataset()
            fc.StackID = str(stack_index)
            fc.InStackPositionNumber = k + 1
            fc.TemporalPositionIndex = 1
            fc.DimensionIndexValues = [stack_index, k + 1, st.echo_number]
            fc.FrameAcquisitionDateTime = study.study_date + study.study_time
            fc.FrameReferenceDateTime = study.study_date + study.study_time
            fc.FrameAcquisitionDuration = 0.0
            item.FrameContentSequence = DicomSequence([fc])
            pp = Dataset()
            pp.ImagePositionPatient = [_ds(x) for x in geo.positions[k]]
            item.PlanePositionSequence = DicomSequence([pp])
            echo = Dataset()
            echo.EffectiveEchoTime = float(te)
            item.MREchoSequence = DicomSequence([echo])
            ft = Dataset()
            ft.FrameType = _frame_type(profile, st.kind)
            ft.PixelPresentation = "MONOCHROME"
            ft.VolumetricProperties = "VOLUME"
            ft.VolumeBasedCalculationTechnique = "NONE"
            ft.ComplexImageComponent = _complex(st.kind)
            ft.AcquisitionContrast = "T2_STAR" if profile.t2star_like else "T1"
            item.MRImageFrameTypeSequence = DicomSequence([ft])
            profile.add_private_frame(item, st.kind, st.echo_number)
            per_frame.append(item)
            frames.append(stored[k])
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.NumberOfFrames = len(frames)
    pixels = np.stack(frames)
    bits = _bits_stored(pixels)
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    profile.add_private(ds, stacks[0].kind)
    _compress(ds, transfer_syntax)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / _file_name(sop_uid)
    ds.save_as(path, enforce_file_format=True)
    return [path]


def _add_shared_mr_macros(shared: Dataset, profile: VendorProfile) -> None:
    """The Enhanced MR functional-group macros that carry no geometry."""
    coil = Dataset()
    coil.ReceiveCoilName = profile.coil_name or "HEAD"
    coil.ReceiveCoilManufacturerName = profile.manufacturer
    coil.ReceiveCoilType = "MULTICOIL"
    coil.QuadratureReceiveCoil = "NO"
    element = Dataset()
    element.MultiCoilElementName = "HE1-4"
    element.MultiCoilElementUsed = "YES"
    coil.MultiCoilDefinitionSequence = DicomSequence([element])
    shared.MRReceiveCoilSequence = DicomSequence([coil])
    tx = Dataset()
    tx.TransmitCoilName = "Body"
    tx.TransmitCoilManufacturerName = profile.manufacturer
    tx.TransmitCoilType = "BODY"
    shared.MRTransmitCoilSequence = DicomSequence([tx])
    avg = Dataset()
    avg.NumberOfAverages = 1.0
    shared.MRAveragesSequence = DicomSequence([avg])
    anat = Dataset()
    anat.FrameLaterality = "U"
    region = Dataset()
    region.CodeValue = "12738006"
    region.CodingSchemeDesignator = "SCT"
    region.CodeMeaning = "Brain"
    anat.AnatomicRegionSequence = DicomSequence([region])
    shared.FrameAnatomySequence = DicomSequence([anat])
    fov = Dataset()
    fov.InPlanePhaseEncodingDirection = "ROW"
    fov.MRAcquisitionFrequencyEncodingSteps = 256
    fov.MRAcquisitionPhaseEncodingStepsInPlane = 256
    fov.PercentSampling = 100.0
    fov.PercentPhaseFieldOfView = 100.0
    shared.MRFOVGeometrySequence = DicomSequence([fov])
    mod = Dataset()
    mod.InversionRecovery = "NO"
    mod.FlowCompensation = "NONE"
    mod.Spoiling = "RF"
    mod.T2Preparation = "NO"
    mod.SpectrallySelectedExcitation = "NONE"
    mod.SpatialPresaturation = "NONE"
    mod.PartialFourier = "NO"
    mod.ParallelAcquisition = "NO"
    shared.MRModifierSequence = DicomSequence([mod])
    imod = Dataset()
    imod.MagnetizationTransfer = "NONE"
    imod.BloodSignalNulling = "NO"
    imod.Tagging = "NONE"
    imod.TransmitterFrequency = 42.577478 * profile.field_strength_t
    imod.PixelBandwidth = 120.0
    shared.MRImagingModifierSequence = DicomSequence([imod])


def _complex(kind: str) -> str:
    return "PHASE" if kind == "phase" else "MAGNITUDE"
