"""Dispatch `cmb datasets import --format F` to the importer of that format."""

from __future__ import annotations

from pathlib import Path

from model.errors import InputError
from training.datasets.common import ImportedCase, write_all


def load_format(fmt: str, src: str | Path, split: str = "train") -> list[ImportedCase]:
    if not Path(src).exists():
        raise InputError(f"{src}: no such file or folder")
    if fmt == "valdo":
        from training.datasets.valdo import import_valdo

        return import_valdo(src, split)
    if fmt == "dou":
        from training.datasets.dou import import_dou

        return import_dou(src, split)
    if fmt == "nifti-pairs":
        from training.datasets.nifti_pairs import import_nifti_pairs

        return import_nifti_pairs(src, split)
    if fmt == "dicom-seg":
        from training.datasets.dicom_seg import import_dicom_seg

        return import_dicom_seg(src, split)
    raise ValueError(f"unknown dataset format {fmt!r}")


def import_dataset(fmt: str, src: str | Path, out: str | Path, split: str = "train") -> int:
    """Import ``src`` in format ``fmt`` into ``out``; returns the number of cases."""
    return write_all(out, load_format(fmt, src, split))
