"""VALDO 2021 Task 2 (cerebral microbleeds on T2*).

Layout of the challenge release (one folder per subject)::

    Task2/sub-101/sub-101_space-T2S_desc-masked_T2S.nii.gz   T2*-weighted image (skull-stripped)
    Task2/sub-101/sub-101_space-T2S_desc-masked_T1.nii.gz    co-registered T1 (ignored)
    Task2/sub-101/sub-101_space-T2S_desc-masked_T2.nii.gz    co-registered T2 (ignored)
    Task2/sub-101/sub-101_space-T2S_CMB.nii.gz               binary CMB mask on the T2* grid

The masks are binary; instances are their 26-connected components.  NaNs that
some images carry outside the brain mask become 0.  The files carry no
acquisition metadata; the cohort (first digit of the subject number: 1, 2 or 3)
is recorded so results can be stratified by it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.errors import InputError
from model.volume import read_nifti
from training.datasets.common import ImportedCase, instance_labels, make_record


def find_subjects(src: Path) -> list[Path]:
    subjects = sorted(p for p in src.glob("sub-*") if p.is_dir())
    if not subjects and (src / "Task2").is_dir():
        subjects = sorted(p for p in (src / "Task2").glob("sub-*") if p.is_dir())
    return subjects


def import_valdo(src: str | Path, split: str = "train") -> list[ImportedCase]:
    src = Path(src)
    subjects = find_subjects(src)
    if not subjects:
        raise InputError(f"{src}: no sub-*/ folders (expected the VALDO Task2 layout)")
    cases = []
    for folder in subjects:
        sub = folder.name
        image_path = folder / f"{sub}_space-T2S_desc-masked_T2S.nii.gz"
        mask_path = folder / f"{sub}_space-T2S_CMB.nii.gz"
        for p in (image_path, mask_path):
            if not p.is_file():
                raise InputError(f"{p}: missing (VALDO Task2 layout)")
        image = read_nifti(image_path)
        image = image.with_array(np.nan_to_num(image.array).astype(np.float32))
        mask = read_nifti(mask_path)
        if mask.shape != image.shape or not np.allclose(mask.affine, image.affine, atol=1e-3):
            raise InputError(f"{mask_path}: grid differs from {image_path.name}")
        labels = instance_labels(mask.array)
        case_id = f"valdo-{sub}"
        digits = sub.removeprefix("sub-")
        record = make_record(
            case_id,
            image,
            labels,
            source="valdo",
            split=split,
            acquisition={"sequence": "t2star"},
            extra={"cohort": int(digits[0]) if digits[:1].isdigit() else None, "source_id": sub},
        )
        cases.append(ImportedCase(case_id, image, image.with_array(labels), record))
    return cases
