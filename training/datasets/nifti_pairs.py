"""Any folder of NIfTI image/mask pairs.

Recognised layouts (the first that matches wins):

1. ``images/<name>.nii[.gz]`` with ``labels/`` or ``masks/<name>.nii[.gz]``;
2. nnU-Net: ``imagesTr/<name>_0000.nii.gz`` with ``labelsTr/<name>.nii.gz``
   (also ``imagesTs``/``labelsTs``);
3. one flat folder: ``<name>.nii.gz`` with ``<name>_mask|_seg|_label|_labels|_cmb.nii.gz``.

A binary mask becomes instances by 26-connected components; a mask with
several positive values is taken as instance labels already.
"""

from __future__ import annotations

import re
from pathlib import Path

from model.errors import InputError
from model.volume import read_nifti
from training.datasets.common import ImportedCase, instance_labels, make_record

MASK_SUFFIXES = ("_mask", "_seg", "_label", "_labels", "_cmb")


def _stem(p: Path) -> str:
    return re.sub(r"\.nii(\.gz)?$", "", p.name)


def _niftis(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.nii*") if re.search(r"\.nii(\.gz)?$", p.name))


def find_pairs(src: Path) -> list[tuple[str, Path, Path]]:
    for img_dir, lab_dirs in (("images", ("labels", "masks")),):
        if (src / img_dir).is_dir():
            for lab in lab_dirs:
                if (src / lab).is_dir():
                    masks = {_stem(p): p for p in _niftis(src / lab)}
                    return [
                        (_stem(p), p, masks[_stem(p)])
                        for p in _niftis(src / img_dir)
                        if _stem(p) in masks
                    ]
    for img_dir, lab_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        if (src / img_dir).is_dir() and (src / lab_dir).is_dir():
            masks = {_stem(p): p for p in _niftis(src / lab_dir)}
            pairs = []
            for p in _niftis(src / img_dir):
                name = re.sub(r"_0000$", "", _stem(p))
                if _stem(p).endswith("_0000") and name in masks:
                    pairs.append((name, p, masks[name]))
            return pairs
    files = {_stem(p): p for p in _niftis(src)}
    pairs = []
    for name, p in files.items():
        if name.endswith(MASK_SUFFIXES):
            continue
        for suffix in MASK_SUFFIXES:
            if name + suffix in files:
                pairs.append((name, p, files[name + suffix]))
                break
    return pairs


def import_nifti_pairs(
    src: str | Path, split: str = "train", source: str = "nifti"
) -> list[ImportedCase]:
    src = Path(src)
    pairs = find_pairs(src)
    if not pairs:
        raise InputError(
            f"{src}: no image/mask pairs "
            "(images/+labels/, imagesTr/+labelsTr/, or <name>_mask.nii.gz)"
        )
    cases = []
    for name, image_path, mask_path in pairs:
        image = read_nifti(image_path)
        mask = read_nifti(mask_path)
        if mask.shape != image.shape:
            raise InputError(f"{mask_path}: shape {mask.shape} differs from image {image.shape}")
        labels = instance_labels(mask.array)
        case_id = f"{source}-{name}"
        record = make_record(
            case_id,
            image,
            labels,
            source=source,
            split=split,
            acquisition={},
            extra={"source_id": name},
        )
        cases.append(ImportedCase(case_id, image, image.with_array(labels), record))
    return cases
