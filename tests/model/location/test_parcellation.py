"""Both parcellation paths return a FreeSurfer label map on the input volume's grid."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from model.errors import CmbError, ModelError
from model.location import labels as lt
from model.location import parcellate
from model.location.grid import canonical_grid
from model.location.parcellation import (
    load_parcellation_model,
    parcellate_mri_synthseg,
    parcellate_onnx,
    read_label_nifti,
    write_nifti,
)
from model.types import Volume
from tests.helpers.onnx_factory import make_test_model


def axial_volume(
    shape=(12, 40, 48), spacing=(3.0, 0.9, 0.9), origin=(-20.0, -18.0, -30.0)
) -> Volume:
    """An axial LPS grid (k: +S, j: +P, i: +L) with an intensity ramp along i."""
    affine = np.zeros((4, 4))
    affine[0, 2] = spacing[2]  # i -> x (L)
    affine[1, 1] = spacing[1]  # j -> y (P)
    affine[2, 0] = spacing[0]  # k -> z (S)
    affine[:3, 3] = origin
    affine[3, 3] = 1
    ramp = np.broadcast_to(np.linspace(0, 1, shape[2], dtype=np.float32), shape).copy()
    return Volume(array=ramp, affine=affine)


def synthseg_style_output(path: Path, shared: Path) -> Volume:
    """A label map as mri_synthseg writes it: 1 mm RAS NIfTI on its own (cropped) grid."""
    src = shared / "synthseg/data/training_label_maps/training_seg_18.nii.gz"
    image = sitk.ReadImage(str(src))
    image = image[60:200, 50:210, 40:200]  # mri_synthseg crops to the head
    arr = sitk.GetArrayFromImage(image)
    arr[~np.isin(arr, lt.LABEL_IDS)] = 0
    out = sitk.GetImageFromArray(arr.astype(np.int32))
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))
    return read_label_nifti(path)


def test_mri_synthseg_adapter_resamples_nearest_onto_the_volume(
    tmp_path: Path, shared_data: Path
) -> None:
    truth = synthseg_style_output(tmp_path / "seg.nii.gz", shared_data)
    assert set(np.unique(truth.array).astype(int)) <= set(lt.LABEL_IDS)
    calls: list[list[str]] = []

    def fake_runner(cmd: Sequence[str]) -> None:
        calls.append(list(cmd))
        args = dict(zip(cmd[1::2], cmd[2::2], strict=False))
        assert read_label_nifti(Path(args["--i"])).shape == (12, 40, 48)
        shutil.copy(tmp_path / "seg.nii.gz", args["--o"])

    exe = tmp_path / "mri_synthseg"
    exe.write_text("#!/bin/sh\nexit 1\n")
    exe.chmod(0o755)
    volume = axial_volume()
    out = parcellate_mri_synthseg(volume, executable=str(exe), runner=fake_runner)
    assert calls and calls[0][0] == str(exe)
    assert out.shape == volume.shape
    np.testing.assert_allclose(out.affine, volume.affine)
    # every output voxel holds the truth label at the same LPS point (nearest)
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, s, 200) for s in volume.shape], axis=1)
    t_idx = np.rint(truth.lps_to_index(volume.index_to_lps(idx))).astype(int)
    expected = truth.array[t_idx[:, 0], t_idx[:, 1], t_idx[:, 2]]
    got = out.array[idx[:, 0], idx[:, 1], idx[:, 2]]
    assert (got == expected).mean() > 0.97  # ties at half-voxel positions may round either way
    assert len(np.unique(got)) > 3


def test_mri_synthseg_missing_executable_is_a_clear_error() -> None:
    with pytest.raises(CmbError, match="mri_synthseg"):
        parcellate(axial_volume(), method="mri_synthseg", executable="no-such-mri-synthseg")


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown parcellation method"):
        parcellate(axial_volume(), method="atlas")


def test_nifti_round_trip_keeps_lps_geometry(tmp_path: Path) -> None:
    vol = axial_volume()
    write_nifti(vol, tmp_path / "v.nii.gz")
    back = read_label_nifti(tmp_path / "v.nii.gz")
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)


def test_onnx_path_runs_on_the_canonical_grid_and_maps_back(tmp_path: Path) -> None:
    ids = {0: "background", 2: "left cerebral white matter", 3: "left cerebral cortex"}
    path = make_test_model(
        tmp_path / "parc.onnx", task="parcellation", labels=ids, spacing_mm=(2.0, 2.0, 2.0)
    )
    volume = axial_volume()
    out = parcellate(volume, model_path=path, device="cpu")
    assert out.shape == volume.shape
    # the test model's label follows intensity: ramp along +L -> 0, 2, 3 from right to left
    cols = out.array[6, 20]
    assert cols[1] == 0 and cols[-2] == 3 and 2 in cols
    assert np.all(np.diff(np.array([list(ids).index(int(c)) for c in cols])) >= 0)


def test_onnx_path_refuses_a_segmentation_model(tmp_path: Path) -> None:
    path = make_test_model(tmp_path / "seg.onnx")
    with pytest.raises(ModelError, match="not a parcellation model"):
        load_parcellation_model(path, "cpu")


def test_canonical_grid_covers_an_oblique_volume() -> None:
    vol = axial_volume()
    theta = np.deg2rad(20)
    rot = np.array(
        [[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]]
    )
    oblique = Volume(
        array=vol.array,
        affine=np.vstack([np.hstack([rot @ vol.affine[:3, :3], vol.affine[:3, 3:]]), [0, 0, 0, 1]]),
    )
    affine, shape = canonical_grid(oblique, 2.0, divisor=16)
    assert all(s % 16 == 0 for s in shape)
    grid = Volume(array=np.zeros(shape, np.float32), affine=affine)
    from model.location.grid import corners_lps

    idx = grid.lps_to_index(corners_lps(oblique))
    assert np.all(idx >= -0.5 - 1e-6) and np.all(idx <= np.asarray(shape) - 0.5 + 1e-6)


def test_parcellate_onnx_direct(tmp_path: Path) -> None:
    path = make_test_model(tmp_path / "p.onnx", task="parcellation", spacing_mm=(2.0, 2.0, 2.0))
    model = load_parcellation_model(path, "cpu")
    out = parcellate_onnx(axial_volume(), model)
    assert set(np.unique(out.array).astype(int)) <= {0, 2, 3}


def test_head_box_is_a_divisible_crop_around_the_foreground() -> None:
    from model.location.parcellation import head_box

    img = np.zeros((64, 80, 96), np.float32)
    img[20:30, 10:50, 40:60] = 1.0
    box = head_box(img, 16, margin=2)
    sizes = [s.stop - s.start for s in box]
    assert all(n % 16 == 0 for n in sizes)
    assert box[0].start <= 18 and box[0].stop >= 32
    assert box[1].start <= 8 and box[1].stop >= 52
    assert box[2].start <= 38 and box[2].stop >= 62
    assert all(s.start >= 0 and s.stop <= n for s, n in zip(box, img.shape, strict=True))
    assert [s.stop - s.start for s in head_box(np.zeros((32, 32, 32), np.float32), 16)] == [32] * 3
