"""model.volume: SimpleITK and NIfTI conversions keep voxels and LPS geometry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from model.errors import InputError
from model.types import Volume
from model.volume import from_sitk, read_nifti, to_sitk, write_nifti
from tests.helpers.dicom_studies import ORIENTATIONS, make_volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_sitk_round_trip(orientation: str) -> None:
    vol = make_volume(orientation, shape=(5, 7, 9))
    image = to_sitk(vol)
    assert image.GetSize() == (9, 7, 5)  # (x, y, z) = (i, j, k)
    # ITK's physical point of index (i, j, k) is our LPS of (k, j, i).
    point = image.TransformIndexToPhysicalPoint((8, 2, 4))
    np.testing.assert_allclose(point, vol.index_to_lps([4, 2, 8]), atol=1e-6)
    back = from_sitk(image)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-9)


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_nifti_on_disk_is_ras_and_reads_back_as_lps(tmp_path: Path, orientation: str) -> None:
    vol = make_volume(orientation, shape=(5, 7, 9))
    path = tmp_path / "vol.nii.gz"
    write_nifti(vol, path)
    img: Any = nib.load(path)
    data = np.asarray(img.get_fdata())
    assert data.shape == (9, 7, 5)  # NIfTI (i, j, k)
    assert data[8, 2, 4] == vol.array[4, 2, 8]
    ras = img.affine @ np.array([8, 2, 4, 1.0])
    np.testing.assert_allclose(ras[:3], LPS_TO_RAS @ vol.index_to_lps([4, 2, 8]), atol=1e-4)
    back = read_nifti(path)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)


def test_read_nifti_written_by_nibabel(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32)
    ras = np.array([[0, 0, 2.0, -10], [-1.0, 0, 0, 20], [0, 1.5, 0, 5], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, ras), tmp_path / "x.nii")
    vol = read_nifti(tmp_path / "x.nii")
    assert vol.shape == (4, 5, 6)
    for i, j, k in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
        assert vol.array[k, j, i] == data[i, j, k]
        expected = LPS_TO_RAS @ (ras @ [i, j, k, 1.0])[:3]
        np.testing.assert_allclose(vol.index_to_lps([k, j, i]), expected, atol=1e-5)


def test_bad_nifti_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_nifti(tmp_path / "absent.nii.gz")
    (tmp_path / "junk.nii").write_bytes(b"not a nifti file at all")
    with pytest.raises(InputError, match=r"junk\.nii"):
        read_nifti(tmp_path / "junk.nii")
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3, 2), np.float32), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(InputError, match="3D"):
        read_nifti(tmp_path / "4d.nii")


def test_sheared_affine_is_refused() -> None:
    affine = np.eye(4)
    affine[:3, 0] = [0.3, 0.0, 1.0]
    with pytest.raises(ValueError, match="not orthogonal"):
        to_sitk(Volume(np.zeros((2, 2, 2), np.float32), affine))
