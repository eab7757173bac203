"""model.series_writer: vendor-flavoured MR series that standard tools accept."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage

from model.series_writer import (
    SUPPORTED_TRANSFER_SYNTAXES,
    EnhancedStack,
    StudyMeta,
    write_enhanced,
    write_series,
)
from model.types import Volume
from model.vendor_profiles import PROFILES
from tests.helpers.dicom_studies import make_volume


def _dciodvfy_errors(path: Path) -> list[str]:
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("flavour", sorted(PROFILES))
def test_every_flavour_writes_readable_classic_series(tmp_path: Path, flavour: str) -> None:
    vol = make_volume("oblique", shape=(4, 32, 32))
    paths = write_series(vol, tmp_path, flavour=flavour, kind="magnitude", seed=3)
    assert len(paths) == 4
    profile = PROFILES[flavour]
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == MRImageStorage
        assert tuple(ds.ImageType) == profile.image_type("magnitude")
        assert ds.Manufacturer == profile.manufacturer
        assert ds.InstanceNumber == k + 1
        stored = ds.pixel_array.astype(np.float64)
        values = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(values, vol.array[k])  # integer volume: exact
        expected_ipp = vol.affine[:3, 3] + k * vol.affine[:3, 0]
        np.testing.assert_allclose(
            [float(x) for x in ds.ImagePositionPatient], expected_ipp, atol=1e-6
        )


def test_vendor_conventions_in_headers(tmp_path: Path) -> None:
    vol = make_volume(shape=(2, 32, 32))
    siemens = pydicom.dcmread(write_series(vol, tmp_path / "s", flavour="siemens_swi")[0])
    assert "SWI" in siemens.ImageType
    assert siemens.SequenceName == "*swi3d1r"
    minip = pydicom.dcmread(
        write_series(vol, tmp_path / "m", flavour="siemens_swi", kind="minip")[0]
    )
    assert "MNIP" in minip.ImageType
    ge = pydicom.dcmread(write_series(vol, tmp_path / "g", flavour="ge_swan", kind="phase")[0])
    assert ge.get_private_item(0x0043, 0x2F, "GEMS_PARM_01").value == 1
    assert ge.get_private_item(0x0019, 0x9C, "GEMS_ACQU_01").value == "swan"
    philips = pydicom.dcmread(
        write_series(vol, tmp_path / "p", flavour="philips_swip", kind="phase")[0]
    )
    assert philips.get_private_item(0x2005, 0x11, "Philips MR Imaging DD 001").value == "P"
    assert tuple(philips.ImageType)[2:4] == ("P_FFE", "P")


def test_float_volume_round_trips_within_half_a_step(tmp_path: Path) -> None:
    vol = make_volume(shape=(3, 32, 32), integer=False)
    vol = vol.with_array((vol.array / 1000.0 - 1.7).astype(np.float32))
    ds = [pydicom.dcmread(p) for p in write_series(vol, tmp_path)]
    slope = float(ds[0].RescaleSlope)
    values = np.stack([d.pixel_array * slope + float(d.RescaleIntercept) for d in ds])
    assert np.max(np.abs(values - vol.array)) <= slope / 2 + 1e-6


def test_uids_are_deterministic_and_names_do_not_reveal_order(tmp_path: Path) -> None:
    vol = make_volume(shape=(5, 32, 32))
    a = write_series(vol, tmp_path / "a", seed=7)
    b = write_series(vol, tmp_path / "b", seed=7)
    c = write_series(vol, tmp_path / "c", seed=8)
    assert [p.name for p in a] == [p.name for p in b]
    assert {p.name for p in a}.isdisjoint({p.name for p in c})
    assert [p.name for p in a] != sorted(p.name for p in a)  # disk order is not slice order
    study = StudyMeta.synthetic(7)
    assert pydicom.dcmread(a[0]).StudyInstanceUID == study.study_instance_uid


@pytest.mark.parametrize("ts", SUPPORTED_TRANSFER_SYNTAXES)
def test_transfer_syntaxes(tmp_path: Path, ts: str) -> None:
    if ts == "1.2.840.10008.1.2.4.70" and shutil.which("dcmcjpeg") is None:
        pytest.skip("dcmtk's dcmcjpeg is needed to encode JPEG Lossless")
    vol = make_volume(shape=(2, 32, 32))
    paths = write_series(vol, tmp_path, transfer_syntax=ts)
    ds = pydicom.dcmread(paths[1])
    assert ds.file_meta.TransferSyntaxUID == ts
    np.testing.assert_array_equal(ds.pixel_array, vol.array[1].astype(np.uint16))


def test_rejects_unknown_flavour_kind_and_sheared_grid(tmp_path: Path) -> None:
    vol = make_volume(shape=(2, 32, 32))
    with pytest.raises(ValueError, match="unknown flavour"):
        write_series(vol, tmp_path, flavour="acme")
    with pytest.raises(ValueError, match="unknown kind"):
        write_series(vol, tmp_path, kind="t1map")
    sheared = vol.affine.copy()
    sheared[:3, 0] = [0.5, 0.0, 2.0]
    with pytest.raises(ValueError, match="sheared"):
        write_series(Volume(vol.array, sheared), tmp_path)


def test_enhanced_holds_magnitude_and_phase_frames(tmp_path: Path) -> None:
    mag = make_volume("oblique", shape=(4, 32, 32), seed=1)
    pha = make_volume("oblique", shape=(4, 32, 32), seed=2)
    (path,) = write_enhanced(
        [EnhancedStack(mag, "magnitude", 20.0), EnhancedStack(pha, "phase", 20.0)], tmp_path
    )
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == EnhancedMRImageStorage
    assert ds.NumberOfFrames == 8
    comps = [
        f.MRImageFrameTypeSequence[0].ComplexImageComponent
        for f in ds.PerFrameFunctionalGroupsSequence
    ]
    assert comps == ["MAGNITUDE"] * 4 + ["PHASE"] * 4
    pvt = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    values = ds.pixel_array * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
    np.testing.assert_allclose(values[:4], mag.array, atol=float(pvt.RescaleSlope))


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
@pytest.mark.parametrize("enhanced", [False, True])
@pytest.mark.parametrize("kind", ["magnitude", "minip"])
@pytest.mark.parametrize("flavour", sorted(PROFILES))
def test_dciodvfy_finds_no_errors(tmp_path: Path, flavour: str, kind: str, enhanced: bool) -> None:
    vol = make_volume("feet_first", shape=(2, 32, 32))
    paths = write_series(
        vol,
        tmp_path,
        flavour=flavour,
        kind=kind,
        enhanced=enhanced,
        transfer_syntax=ExplicitVRLittleEndian,
        patient_position="FFS",
    )
    assert _dciodvfy_errors(paths[0]) == []
