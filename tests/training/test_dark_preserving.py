"""The minimum-filtered copy that keeps one-voxel dark dots through the 1 mm resampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model.types import Volume
from model.volume import read_nifti
from training.dark_preserving import copy_folder, main


def _dot_volume(inplane_mm: float) -> Volume:
    """A flat 100 volume with one dark voxel, 2 mm slices and ``inplane_mm`` pixels."""
    array = np.full((6, 40, 40), 100.0, np.float32)
    array[3, 21, 21] = 0.0
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = inplane_mm, inplane_mm, 2.0, 1.0
    return Volume(array, affine)


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
