"""The minimum-filtered copy that keeps one-voxel dark dots through the 1 mm resampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model.preprocess import resample_to_spacing
from model.types import Volume
from model.volume import read_nifti
from training.dark_preserving import copy_folder, footprint, main, min_filtered


def _dot_volume(inplane_mm: float) -> Volume:
    """A flat 100 volume with one dark voxel, 2 mm slices and ``inplane_mm`` pixels."""
    array = np.full((6, 40, 40), 100.0, np.float32)
    array[3, 21, 21] = 0.0
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = inplane_mm, inplane_mm, 2.0, 1.0
    return Volume(array, affine)


def test_footprint_covers_the_grid_in_plane_only() -> None:
    assert footprint((2.0, 0.5, 0.5), 1.0) == (1, 3, 3)
    assert footprint((2.0, 0.87, 0.7), 1.0) == (1, 3, 3)
    assert footprint((1.0, 1.0, 1.0), 1.0) == (1, 1, 1)  # no finer axis: unchanged
    assert footprint((3.0, 0.4, 1.2), 1.0) == (1, 4, 1)


def test_a_one_voxel_dot_stays_dark_on_the_1_mm_grid() -> None:
    plain = _dot_volume(0.5)
    assert plain.spacing == (2.0, 0.5, 0.5)
    filtered = min_filtered(plain, 1.0)
    assert (filtered.array[3] == 0.0).sum() == 9  # the dot, 3 x 3 pixels
    assert filtered.array.shape == plain.array.shape
    # linear resampling to 1 mm reads the plain dot at a quarter of its depth in-plane (the
    # grids are half a source voxel apart), the filtered one at its full depth in-plane
    plain_min = resample_to_spacing(plain, (1.0, 1.0, 1.0)).array.min()
    filtered_min = resample_to_spacing(filtered, (1.0, 1.0, 1.0)).array.min()
    assert plain_min > 75.0
    assert filtered_min < 30.0
    same = _dot_volume(1.0)
    assert min_filtered(same, 1.0) is same


def test_copy_folder_filters_images_and_links_labels(tmp_path: Path) -> None:
    from model.volume import write_nifti

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    volume = _dot_volume(0.5)
    write_nifti(volume, data / "images" / "c1.nii.gz")
    labels = volume.with_array((volume.array == 0).astype(np.float32))
    write_nifti(labels, data / "labels" / "c1.nii.gz")
    record = {"case_id": "c1", "image": "images/c1.nii.gz", "label": "labels/c1.nii.gz"}
    (data / "cases.jsonl").write_text(json.dumps(record) + "\n")

    out = tmp_path / "out"
    assert main(["--data", str(data), "--out", str(out)]) == 0
    assert json.loads((out / "cases.jsonl").read_text()) == record
    assert (read_nifti(out / "images" / "c1.nii.gz").array[3] == 0.0).sum() == 9
    assert (out / "labels" / "c1.nii.gz").resolve() == (data / "labels" / "c1.nii.gz").resolve()
    assert copy_folder(data, out, 1.0) == 1  # again over an existing copy
