"""Enhanced MR Image Storage writer: one multi-frame file for one or more stacks.

Several stacks (magnitude + phase, or several echoes) go into one file the way
Philips exports them; the per-frame functional groups carry each frame's
position, echo time and image kind.  Public entry points are re-exported by
`model.series_writer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian

from model.series_writer_common import (
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
from model.types import Volume
from model.vendor_profiles import VendorProfile

__all__ = ["EnhancedStack", "write_enhanced"]


@dataclass(frozen=True)
class EnhancedStack:
    """One stack of frames inside an Enhanced MR file (one image kind, one echo)."""

    volume: Volume
    kind: str = "magnitude"
    echo_time_ms: float | None = None
    echo_number: int = 1


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
    profile = get_profile(flavour, stacks[0].kind)
    for st in stacks:
        get_profile(flavour, st.kind)
        if st.volume.shape[1:] != stacks[0].volume.shape[1:]:
            raise ValueError("all stacks of an enhanced file need the same rows and columns")
    study = (study or StudyMeta.synthetic(seed)).resolved(seed)
    field_t = profile.field_strength_t if field_strength_t is None else float(field_strength_t)
    series_uid = series_instance_uid or deterministic_uid(
        "series", seed, study.study_instance_uid, series_number, flavour, "enhanced"
    )
    sop_uid = deterministic_uid("sop-enhanced", seed, series_uid)
    all_values = np.concatenate([np.asarray(s.volume.array, np.float64).ravel() for s in stacks])
    _, slope, intercept = quantize(all_values)
    first_geo = geometry_of(stacks[0].volume)
    te0 = stacks[0].echo_time_ms if stacks[0].echo_time_ms is not None else profile.echo_time_ms

    ds = Dataset()
    ds.file_meta = file_meta(EnhancedMRImageStorage, sop_uid, transfer_syntax)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = study.study_date
    ds.InstanceCreationTime = study.study_time
    add_common_attributes(
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
    if str(ds.ImageType[0]) != "DERIVED":
        # The MR Pulse Sequence module is for ORIGINAL/MIXED images only (PS3.3 C.8.13.4).
        _add_pulse_sequence(ds, profile)
    else:
        del ds.MRAcquisitionType
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
    for kw in ("Manufacturer", "ManufacturerModelName", "SoftwareVersions"):
        if not ds.get(kw):
            setattr(ds, kw, "UNKNOWN")  # type 1 in the Enhanced General Equipment module
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
    pm.PixelSpacing = [ds_str(first_geo.pixel_spacing[0]), ds_str(first_geo.pixel_spacing[1])]
    pm.SliceThickness = ds_str(slice_thickness_mm or first_geo.slice_spacing)
    pm.SpacingBetweenSlices = ds_str(first_geo.slice_spacing)
    shared.PixelMeasuresSequence = DicomSequence([pm])
    po = Dataset()
    po.ImageOrientationPatient = [ds_str(x) for x in (*first_geo.row_cosine, *first_geo.col_cosine)]
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
    pvt.RescaleIntercept = ds_str(intercept)
    pvt.RescaleSlope = ds_str(slope)
    pvt.RescaleType = "US"
    shared.PixelValueTransformationSequence = DicomSequence([pvt])
    _add_shared_mr_macros(shared, profile)
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

    frames: list[npt.NDArray[np.uint16]] = []
    per_frame = DicomSequence()
    for stack_index, st in enumerate(stacks, start=1):
        geo = geometry_of(st.volume)
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
            pp.ImagePositionPatient = [ds_str(x) for x in geo.positions[k]]
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
    bits = bits_stored(pixels)
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    profile.add_private(ds, stacks[0].kind)
    compress(ds, transfer_syntax)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / file_name(sop_uid)
    ds.save_as(path, enforce_file_format=True)
    return [path]


def _add_pulse_sequence(ds: Dataset, profile: VendorProfile) -> None:
    """MR Pulse Sequence module of a gradient-echo acquisition."""
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
    if profile.acquisition_type == "3D":
        ds.CoverageOfKSpace = "FULL"  # type 1C: 3D acquisitions only
    ds.NumberOfKSpaceTrajectories = 1


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
