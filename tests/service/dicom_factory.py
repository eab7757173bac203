"""Tiny MR instances built with pydicom, for the service tests (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def mr_dataset(
    study_uid: str,
    series_uid: str,
    index: int,
    *,
    description: str = "SWI",
    sop_class_uid: str = MRImageStorage,
    size: int = 8,
) -> Dataset:
    """One small MR slice with the identifiers (and a fake patient the logs must not show)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    sop_uid = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = "Secret^Patient"
    ds.PatientID = "PID-SECRET-42"
    ds.PatientBirthDate = "19450101"
    ds.Modality = "MR" if sop_class_uid == MRImageStorage else "CT"
    ds.SeriesDescription = description
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [0.0, 0.0, float(index)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 1.0
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = (np.arange(size * size, dtype=np.uint16) + index).tobytes()
    return ds


def write_study(
    folder: Path,
    *,
    n: int = 3,
    study_uid: str | None = None,
    descriptions: tuple[str, ...] = ("SWI",),
) -> tuple[str, list[Path]]:
    """Write a study with one series per description; returns (study UID, files)."""
    study_uid = study_uid or generate_uid()
    files = []
    for description in descriptions:
        series_uid = generate_uid()
        sub = folder / series_uid
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            ds = mr_dataset(study_uid, series_uid, i, description=description)
            path = sub / f"{i:03d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    return study_uid, files
