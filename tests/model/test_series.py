"""model.series: geometry from the DICOM headers, slice order, pixel decoding."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLosslessSV1

from model.dicom_in import load_studies
from model.errors import GeometryError
from model.series import Series
from model.series_writer import SUPPORTED_TRANSFER_SYNTAXES, StudyMeta, write_series
from model.types import Volume
from tests.helpers.dicom_studies import ORIENTATIONS, make_volume


def _only_series(root: Path) -> Series:
    (study,) = load_studies([root])
    assert len(study.series) == 1
    return study.series[0]


def _lps_by_hand(ds: pydicom.Dataset, row: int, col: int) -> np.ndarray:
    """PS3.3 C.7.6.2.1.1: P = S + X_cos * col * dcol + Y_cos * row * drow."""
    s = np.array([float(x) for x in ds.ImagePositionPatient])
    iop = [float(x) for x in ds.ImageOrientationPatient]
    drow, dcol = (float(x) for x in ds.PixelSpacing)
    return s + np.array(iop[:3]) * col * dcol + np.array(iop[3:]) * row * drow


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_known_voxel_matches_dicom_geometry(tmp_path: Path, orientation: str) -> None:
    vol = make_volume(orientation, shape=(9, 32, 24), seed=5)
    position = "FFS" if orientation == "feet_first" else "HFS"
    paths = write_series(vol, tmp_path, flavour="siemens_t2star", patient_position=position)
    series = _only_series(tmp_path)
    loaded = series.load_volume()
    assert loaded.shape == (9, 32, 24)
    # The normal-sorted slices, whatever the file names and InstanceNumbers say.
    dist = [np.dot(loaded.index_to_lps([k, 0, 0]), np.cross(*_cosines(loaded))) for k in range(9)]
    assert np.all(np.diff(dist) > 0)
    for path, (row, col) in zip(paths[::4], [(3, 5), (17, 0), (31, 23)], strict=True):
        ds = pydicom.dcmread(path)
        k = [s.sop_instance_uid for s in loaded.slices].index(ds.SOPInstanceUID)
        np.testing.assert_allclose(
            loaded.index_to_lps([k, row, col]), _lps_by_hand(ds, row, col), atol=1e-4
        )
        expected = float(ds.pixel_array[row, col]) * float(ds.RescaleSlope) + float(
            ds.RescaleIntercept
        )
        assert loaded.array[k, row, col] == pytest.approx(expected)


def _cosines(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    a = vol.affine
    return a[:3, 2] / np.linalg.norm(a[:3, 2]), a[:3, 1] / np.linalg.norm(a[:3, 1])


def test_shuffled_instance_numbers_do_not_change_order(tmp_path: Path) -> None:
    vol = make_volume("oblique", shape=(6, 32, 32), seed=2)
    paths = write_series(vol, tmp_path, flavour="generic_t2star_2d")
    rng = np.random.default_rng(0)
    for path, number in zip(paths, rng.permutation(len(paths)) + 1, strict=True):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = int(number)
        ds.save_as(path)
    loaded = _only_series(tmp_path).load_volume()
    np.testing.assert_array_equal(loaded.array, vol.array)
    np.testing.assert_allclose(loaded.affine, vol.affine, atol=1e-5)


def test_reversed_slice_direction_is_sorted_along_the_normal(tmp_path: Path) -> None:
    vol = make_volume("axial", shape=(5, 32, 32), seed=4)
    flipped = vol.affine.copy()
    flipped[:3, 3] = vol.affine[:3, 3] + 4 * vol.affine[:3, 0]
    flipped[:3, 0] = -vol.affine[:3, 0]
    write_series(Volume(vol.array, flipped), tmp_path)
    loaded = _only_series(tmp_path).load_volume()
    # Same world grid, slices now in ascending normal order: the array is reversed.
    np.testing.assert_array_equal(loaded.array, vol.array[::-1])
    np.testing.assert_allclose(loaded.affine, vol.affine, atol=1e-5)


def test_source_datasets_follow_slice_order(tmp_path: Path) -> None:
    write_series(make_volume(shape=(4, 32, 32)), tmp_path)
    series = _only_series(tmp_path)
    uids = [s.sop_instance_uid for s in series.load_volume().slices]
    datasets = series.source_datasets()
    assert [d.SOPInstanceUID for d in datasets] == uids
    assert all("PixelData" in d for d in datasets)


@pytest.mark.parametrize("ts", SUPPORTED_TRANSFER_SYNTAXES[1:])
def test_compressed_transfer_syntax_decodes_to_the_same_pixels(tmp_path: Path, ts: str) -> None:
    if ts == JPEGLosslessSV1 and shutil.which("dcmcjpeg") is None:
        pytest.skip("dcmtk's dcmcjpeg is needed to encode JPEG Lossless")
    vol = make_volume("oblique", shape=(4, 32, 40), seed=9, integer=False)
    write_series(vol, tmp_path / "plain", seed=1)
    write_series(vol, tmp_path / "packed", seed=1, transfer_syntax=ts)
    plain = _only_series(tmp_path / "plain").load_volume()
    packed_series = _only_series(tmp_path / "packed")
    assert str(packed_series.source_datasets()[0].file_meta.TransferSyntaxUID) == ts
    packed = packed_series.load_volume()
    np.testing.assert_array_equal(packed.array, plain.array)
    np.testing.assert_array_equal(packed.affine, plain.affine)


@pytest.mark.parametrize("ts", [SUPPORTED_TRANSFER_SYNTAXES[0], SUPPORTED_TRANSFER_SYNTAXES[2]])
def test_enhanced_multiframe_decodes_like_classic(tmp_path: Path, ts: str) -> None:
    vol = make_volume("sagittal_negated", shape=(6, 32, 32), seed=3)
    write_series(vol, tmp_path / "classic", flavour="philips_swip")
    write_series(
        vol, tmp_path / "enhanced", flavour="philips_swip", enhanced=True, transfer_syntax=ts
    )
    classic = _only_series(tmp_path / "classic").load_volume()
    enhanced_series = _only_series(tmp_path / "enhanced")
    enhanced = enhanced_series.load_volume()
    np.testing.assert_array_equal(enhanced.array, classic.array)
    np.testing.assert_allclose(enhanced.affine, classic.affine, atol=1e-5)
    assert [s.frame_number for s in enhanced.slices] == [1, 2, 3, 4, 5, 6]
    assert len(enhanced_series.source_datasets()) == 1
    assert enhanced_series.info.n_instances == 1
    assert enhanced_series.info.n_frames == 6


def _shift(path: Path, **changes: object) -> None:
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def test_missing_slice_is_refused_naming_the_series(tmp_path: Path) -> None:
    vol = make_volume(shape=(8, 32, 32))
    paths = write_series(vol, tmp_path, series_number=7)
    paths[3].unlink()
    series = _only_series(tmp_path)
    with pytest.raises(GeometryError, match=r"series 7 .*missing slice\(s\).*1 slice\(s\) missing"):
        series.load_volume()


def test_uneven_spacing_is_refused(tmp_path: Path) -> None:
    vol = make_volume(shape=(6, 32, 32))
    paths = write_series(vol, tmp_path)
    ds = pydicom.dcmread(paths[2])
    ipp = [float(x) for x in ds.ImagePositionPatient]
    _shift(paths[2], ImagePositionPatient=[ipp[0], ipp[1], ipp[2] + 0.7])
    with pytest.raises(GeometryError, match="uneven slice spacing"):
        _only_series(tmp_path).load_volume()


def test_mixed_orientation_is_refused(tmp_path: Path) -> None:
    paths = write_series(make_volume(shape=(5, 32, 32)), tmp_path)
    _shift(paths[1], ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    with pytest.raises(GeometryError, match="mixed orientations"):
        _only_series(tmp_path).geometry()


def test_mixed_size_is_refused(tmp_path: Path) -> None:
    uid = "1.2.3.4.5.6.7"
    write_series(make_volume(shape=(3, 32, 32)), tmp_path / "a", series_instance_uid=uid)
    other = make_volume(shape=(2, 32, 40))
    shifted = other.affine.copy()
    shifted[:3, 3] += 3 * other.affine[:3, 0]
    write_series(
        Volume(other.array, shifted),
        tmp_path / "b",
        series_instance_uid=uid,
        seed=4,
        study=StudyMeta.synthetic(0),
    )
    with pytest.raises(GeometryError, match="mixed image sizes"):
        _only_series(tmp_path).load_volume()


def test_duplicate_positions_are_refused(tmp_path: Path) -> None:
    uid = "1.2.3.4.5.6.8"
    vol = make_volume(shape=(3, 32, 32))
    write_series(vol, tmp_path / "a", series_instance_uid=uid, seed=1)
    write_series(vol, tmp_path / "b", series_instance_uid=uid, seed=2, study=StudyMeta.synthetic(1))
    with pytest.raises(GeometryError, match="same position"):
        _only_series(tmp_path).load_volume()
