"""Shared steps of the importers: instance labels, per-CMB records, writing a case.

Resampling rule: importers never resample.  Images and masks stay on their
native grid (the model's own preprocessing resamples at training and inference
time, and the evaluation matches lesions in LPS millimetres), so an imported
dataset is a lossless, re-readable copy of the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cc3d
import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from model.types import Volume
from training.datasets.layout import append_record, finalize, write_images


@dataclass
class ImportedCase:
    case_id: str
    image: Volume
    labels: Volume
    record: dict[str, Any]


def instance_labels(mask: npt.NDArray[np.generic]) -> npt.NDArray[np.int16]:
    """Binary mask -> 26-connected components numbered 1..n; an instance mask is kept."""
    m = np.nan_to_num(np.asarray(mask, dtype=np.float64))
    values = np.unique(np.rint(m[m > 0]))
    if len(values) > 1:
        return np.rint(m).astype(np.int16)
    out = cc3d.connected_components((m > 0).astype(np.uint8), connectivity=26)
    return np.asarray(out, dtype=np.int16)


def cmb_records(image: Volume, labels: npt.NDArray[np.int16]) -> list[dict[str, Any]]:
    """One record per instance: centre (LPS), apparent diameter, contrast to a 2-voxel shell."""
    out: list[dict[str, Any]] = []
    spacing = np.array(image.spacing)
    img = np.nan_to_num(image.array.astype(np.float64))
    for lab in [int(v) for v in np.unique(labels) if v > 0]:
        m = labels == lab
        idx = np.argwhere(m)
        centre = image.index_to_lps(idx.mean(0))
        area = float(m.sum(axis=(1, 2)).max()) * float(spacing[1] * spacing[2])
        shell = ndi.binary_dilation(m, iterations=2) & ~m & (labels == 0)
        bg = float(np.median(img[shell])) if shell.any() else 0.0
        contrast = 1.0 - float(img[m].mean()) / bg if bg > 0 else None
        out.append(
            {
                "label": lab,
                "center_lps_mm": [round(float(c), 3) for c in centre],
                "diameter_true_mm": None,
                "diameter_apparent_mm": round(2.0 * float(np.sqrt(area / np.pi)), 3),
                "n_voxels": int(m.sum()),
                "region": None,
                "region_label": None,
                "mars": None,
                "lobe": None,
                "contrast": None if contrast is None else round(contrast, 4),
            }
        )
    return out


def make_record(
    case_id: str,
    image: Volume,
    labels: npt.NDArray[np.int16],
    *,
    source: str,
    split: str,
    acquisition: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spacing = image.spacing
    acq = {
        "sequence": None,
        "field_strength_t": None,
        "echo_time_ms": None,
        "slice_thickness_mm": round(spacing[0], 4),
        "slice_gap_mm": None,
        "pixel_spacing_mm": [round(spacing[1], 4), round(spacing[2], 4)],
        "acquisition_type": None,
        "manufacturer": None,
        "snr": None,
        "bias": None,
        **acquisition,
    }
    return {
        "case_id": case_id,
        "image": f"images/{case_id}.nii.gz",
        "label": f"labels/{case_id}.nii.gz",
        "subject": None,
        "split": split,
        "source": source,
        "acquisition": acq,
        "cmbs": cmb_records(image, labels),
        "mimics": [],
        **(extra or {}),
    }


def write_all(out_dir: str | Path, cases: list[ImportedCase]) -> int:
    for case in cases:
        write_images(out_dir, case)
        append_record(out_dir, case.record)
    return finalize(out_dir)
