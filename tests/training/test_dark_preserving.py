"""The minimum-filtered copy that keeps one-voxel dark dots through the 1 mm resampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model.volume import read_nifti
from tests.helpers.lesion_phantom import dot_volume
from training.dark_preserving import copy_folder, main


def test_copy_folder_filters_images_and_links_labels(tmp_path: Path) -> None:
    from model.volume import write_nifti

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    volume = dot_volume(0.5)
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
