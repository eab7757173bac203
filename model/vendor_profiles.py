"""How each scanner vendor labels its MR series: the data behind `series_writer`.

One `VendorProfile` per flavour: manufacturer, sequence attributes
(ScanningSequence, SequenceVariant, SequenceName), default timing, and per
image kind (magnitude, phase, minIP, MIP) the ImageType values, the series
description and the private tags that vendor really writes.  Sources:
the real exports under ``shared/data/real_dicom`` (Siemens ``ORIGINAL\\PRIMARY\\M\\ND``,
GE ``ORIGINAL\\PRIMARY\\OTHER`` with (0019,109C)/(0019,109E) PSD names and
(0043,102F) image kind), dcm2niix's vendor notes, and published Siemens SWI
exports (``ORIGINAL\\PRIMARY\\M\\SWI\\NORM\\DIS2D``, ``MNIP`` for minIP,
SequenceName ``*swi3d1r``).  See docs/input-formats.md for the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

KINDS: tuple[str, ...] = ("magnitude", "phase", "minip", "mip")

PrivateWriter = Callable[[Dataset, str], None]
PrivateFrameWriter = Callable[[Dataset, str, int], None]


def _no_private(ds: Dataset, kind: str) -> None:
    return None


def _no_private_frame(ds: Dataset, kind: str, echo_number: int) -> None:
    return None


@dataclass(frozen=True)
class VendorProfile:
    """Header conventions of one vendor and sequence."""

    name: str
    manufacturer: str
    model_name: str
    software_version: str
    protocol_name: str
    descriptions: dict[str, str]
    image_types: dict[str, tuple[str, ...]]
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    acquisition_type: str
    repetition_time_ms: float
    echo_time_ms: float
    flip_angle_deg: float
    field_strength_t: float
    sequence_name: str | None = None
    pulse_sequence_name: str = "GRE"
    scan_options: tuple[str, ...] = ()
    inversion_time_ms: float | None = None
    coil_name: str = "HEAD"
    swi: bool = False
    t2star_like: bool = True
    private: PrivateWriter = field(default=_no_private)
    private_frame: PrivateFrameWriter = field(default=_no_private_frame)

    def image_type(self, kind: str) -> tuple[str, ...]:
        return self.image_types[kind]

    def series_description(self, kind: str) -> str:
        return self.descriptions[kind]

    def add_private(self, ds: Dataset, kind: str) -> None:
        self.private(ds, kind)

    def add_private_frame(self, item: Dataset, kind: str, echo_number: int) -> None:
        self.private_frame(item, kind, echo_number)


def _siemens_private(ds: Dataset, kind: str) -> None:
    block = ds.private_block(0x0051, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0F, "LO", "HEA;HEP")  # coil elements
    block.add_new(0x11, "LO", "p2")  # parallel imaging (iPAT) mode
    block.add_new(0x0E, "LO", "Tra")  # slice orientation text


def _philips_private(ds: Dataset, kind: str) -> None:
    block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
    block.add_new(0x20, "LO", "FFE")  # scanning technique
    mr = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
    mr.add_new(0x11, "CS", "P" if kind == "phase" else "M")  # image type MR


def _philips_private_frame(item: Dataset, kind: str, echo_number: int) -> None:
    mr = item.private_block(0x2005, "Philips MR Imaging DD 005", create=True)
    mr.add_new(0x11, "CS", "P" if kind == "phase" else "M")


def _ge_private(psd: str, internal: str) -> PrivateWriter:
    def write(ds: Dataset, kind: str) -> None:
        acq = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
        acq.add_new(0x9C, "LO", psd)  # pulse sequence (PSD) name
        acq.add_new(0x9E, "LO", internal)  # internal pulse sequence name
        parm = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
        # (0043,102F) image kind: 0 magnitude, 1 phase, 2 real, 3 imaginary
        parm.add_new(0x2F, "SS", 1 if kind == "phase" else 0)

    return write


def _siemens_types(magnitude: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return {
        "magnitude": magnitude,
        "phase": ("ORIGINAL", "PRIMARY", "P", "ND"),
        "minip": ("DERIVED", "PRIMARY", "MNIP", "NORM", "DIS2D"),
        "mip": ("ORIGINAL", "PRIMARY", "MIP_TRA", "NORM", "DIS2D"),
    }


def _suffixed(base: str) -> dict[str, str]:
    return {
        "magnitude": base,
        "phase": f"{base}_Pha",
        "minip": f"{base}_MinIP",
        "mip": f"{base}_MIP",
    }


_SIEMENS = {
    "manufacturer": "SIEMENS",
    "model_name": "Prisma_fit",
    "software_version": "syngo MR E11",
    "coil_name": "HeadNeck_20",
    "private": _siemens_private,
}

PROFILES: dict[str, VendorProfile] = {
    "siemens_swi": VendorProfile(
        name="siemens_swi",
        protocol_name="t2_swi_tra_p2",
        descriptions={
            "magnitude": "t2_swi_tra_p2_SWI_Images",
            "phase": "t2_swi_tra_p2_Pha_Images",
            "minip": "t2_swi_tra_p2_mIP_Images(SW)",
            "mip": "t2_swi_tra_p2_MIP_Images(SW)",
        },
        image_types=_siemens_types(("ORIGINAL", "PRIMARY", "M", "SWI", "NORM", "DIS2D")),
        scanning_sequence=("GR",),
        sequence_variant=("SP",),
        acquisition_type="3D",
        repetition_time_ms=27.0,
        echo_time_ms=20.0,
        flip_angle_deg=15.0,
        field_strength_t=3.0,
        sequence_name="*swi3d1r",
        pulse_sequence_name="swi3d1r",
        swi=True,
        **_SIEMENS,  # type: ignore[arg-type]
    ),
    "siemens_swi_mag": VendorProfile(
        # The plain magnitude series of the same Siemens SWI acquisition ("_Mag"):
        # T2*-weighted GRE, without the phase-mask weighting, no SWI in ImageType.
        name="siemens_swi_mag",
        protocol_name="t2_swi_tra_p2",
        descriptions={
            "magnitude": "t2_swi_tra_p2_Mag_Images",
            "phase": "t2_swi_tra_p2_Pha_Images",
            "minip": "t2_swi_tra_p2_mIP_Images(SW)",
            "mip": "t2_swi_tra_p2_MIP_Images(SW)",
        },
        image_types=_siemens_types(("ORIGINAL", "PRIMARY", "M", "ND", "NORM")),
        scanning_sequence=("GR",),
        sequence_variant=("SP",),
        acquisition_type="3D",
        repetition_time_ms=27.0,
        echo_time_ms=20.0,
        flip_angle_deg=15.0,
        field_strength_t=3.0,
        sequence_name="*swi3d1r",
        pulse_sequence_name="swi3d1r",
        **_SIEMENS,  # type: ignore[arg-type]
    ),
    "siemens_t2star": VendorProfile(
        name="siemens_t2star",
        protocol_name="t2_fl2d_tra_hemo",
        descriptions=_suffixed("t2_fl2d_tra_hemo"),
        image_types=_siemens_types(("ORIGINAL", "PRIMARY", "M", "ND", "NORM")),
        scanning_sequence=("GR",),
        sequence_variant=("SP", "OSP"),
        acquisition_type="2D",
        repetition_time_ms=650.0,
        echo_time_ms=20.0,
        flip_angle_deg=20.0,
        field_strength_t=1.5,
        sequence_name="*fl2d1r",
        pulse_sequence_name="fl2d1r",
        **_SIEMENS,  # type: ignore[arg-type]
    ),
    "siemens_t1": VendorProfile(
        name="siemens_t1",
        protocol_name="t1_mprage_sag_p2_iso",
        descriptions=_suffixed("t1_mprage_sag_p2_iso"),
        image_types=_siemens_types(("ORIGINAL", "PRIMARY", "M", "ND", "NORM")),
        scanning_sequence=("GR", "IR"),
        sequence_variant=("SK", "SP", "MP"),
        scan_options=("IR",),
        acquisition_type="3D",
        repetition_time_ms=2300.0,
        echo_time_ms=2.32,
        inversion_time_ms=900.0,
        flip_angle_deg=8.0,
        field_strength_t=3.0,
        sequence_name="*tfl3d1_16ns",
        pulse_sequence_name="tfl3d1_16ns",
        t2star_like=False,
        **_SIEMENS,  # type: ignore[arg-type]
    ),
    "siemens_flair": VendorProfile(
        name="siemens_flair",
        protocol_name="t2_tirm_tra_dark-fluid",
        descriptions=_suffixed("t2_tirm_tra_dark-fluid"),
        image_types=_siemens_types(("ORIGINAL", "PRIMARY", "M", "ND", "NORM")),
        scanning_sequence=("SE", "IR"),
        sequence_variant=("SK", "SP", "MP", "OSP"),
        scan_options=("IR", "PFP", "FS"),
        acquisition_type="2D",
        repetition_time_ms=9000.0,
        echo_time_ms=81.0,
        inversion_time_ms=2500.0,
        flip_angle_deg=150.0,
        field_strength_t=3.0,
        sequence_name="*tir2d1_16",
        pulse_sequence_name="tir2d1_16",
        t2star_like=False,
        **_SIEMENS,  # type: ignore[arg-type]
    ),
    "localizer": VendorProfile(
        # Siemens' three-plane localizer: an ordinary short-TE FLASH whose
        # ImageType says nothing special; it is told apart by its TE, its few
        # slices and (in a real exam) its three orientations in one series.
        name="localizer",
        protocol_name="localizer",
        descriptions=_suffixed("localizer"),
        image_types=_siemens_types(("ORIGINAL", "PRIMARY", "M", "ND", "NORM")),
        scanning_sequence=("GR",),
        sequence_variant=("SP", "OSP"),
        acquisition_type="2D",
        repetition_time_ms=8.6,
        echo_time_ms=4.0,
        flip_angle_deg=20.0,
        field_strength_t=3.0,
        sequence_name="*fl2d1",
        pulse_sequence_name="fl2d1",
        t2star_like=False,
        **_SIEMENS,  # type: ignore[arg-type]
    ),
    "philips_swip": VendorProfile(
        name="philips_swip",
        manufacturer="Philips Medical Systems",
        model_name="Ingenia",
        software_version="5.4.1\\5.4.1.0",
        protocol_name="WIP SWIp",
        descriptions={
            "magnitude": "SWIp",
            "phase": "SWIp",
            "minip": "mIP SWIp",
            "mip": "MIP SWIp",
        },
        image_types={
            "magnitude": ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"),
            "phase": ("ORIGINAL", "PRIMARY", "P_FFE", "P", "FFE"),
            "minip": ("DERIVED", "SECONDARY", "PROJECTION IMAGE", "MINIP"),
            "mip": ("DERIVED", "SECONDARY", "PROJECTION IMAGE", "MIP"),
        },
        scanning_sequence=("GR",),
        sequence_variant=("OTHER",),
        acquisition_type="3D",
        repetition_time_ms=31.0,
        echo_time_ms=18.0,
        flip_angle_deg=17.0,
        field_strength_t=3.0,
        pulse_sequence_name="FFE3D",
        coil_name="MULTI COIL",
        swi=True,
        private=_philips_private,
        private_frame=_philips_private_frame,
    ),
    "ge_swan": VendorProfile(
        name="ge_swan",
        manufacturer="GE MEDICAL SYSTEMS",
        model_name="SIGNA Architect",
        software_version="27\\LX\\MR Software release:DV27.0_R01_1850.a",
        protocol_name="BRAIN SWAN",
        descriptions={
            "magnitude": "Ax SWAN",
            "phase": "Ax SWAN Filt_Phase",
            "minip": "Ax SWAN MinIP",
            "mip": "Ax SWAN MIP",
        },
        image_types={
            "magnitude": ("ORIGINAL", "PRIMARY", "OTHER"),
            "phase": ("ORIGINAL", "PRIMARY", "OTHER"),
            "minip": ("DERIVED", "SECONDARY", "REFORMATTED", "MIN IP"),
            "mip": ("DERIVED", "SECONDARY", "REFORMATTED", "MIP"),
        },
        scanning_sequence=("GR",),
        sequence_variant=("SS", "SK"),
        scan_options=("FAST_GEMS", "EDR_GEMS", "FILTERED_GEMS", "ACC_GEMS"),
        acquisition_type="3D",
        repetition_time_ms=39.0,
        echo_time_ms=24.0,
        flip_angle_deg=15.0,
        field_strength_t=3.0,
        pulse_sequence_name="SWAN",
        coil_name="NV HEAD",
        swi=True,
        private=_ge_private("swan", "SWAN"),
    ),
    "generic_t2star_2d": VendorProfile(
        # Only public attributes: what an anonymised or converted export keeps.
        name="generic_t2star_2d",
        manufacturer="",
        model_name="",
        software_version="",
        protocol_name="T2STAR_AX",
        descriptions=_suffixed("AX T2* GRE"),
        image_types={
            "magnitude": ("ORIGINAL", "PRIMARY", "M"),
            "phase": ("ORIGINAL", "PRIMARY", "P"),
            "minip": ("DERIVED", "SECONDARY", "MINIP"),
            "mip": ("DERIVED", "SECONDARY", "MIP"),
        },
        scanning_sequence=("GR",),
        sequence_variant=("SP",),
        acquisition_type="2D",
        repetition_time_ms=700.0,
        echo_time_ms=20.0,
        flip_angle_deg=20.0,
        field_strength_t=1.5,
        coil_name="",
    ),
}
