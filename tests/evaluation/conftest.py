"""Tiny truth / prediction folders for the evaluation tests (16^3 label maps, 1 mm voxels)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evaluation.cases import LabelMap
from evaluation.io import write_label_map

SHAPE = (16, 16, 16)


def affine() -> np.ndarray:
    """1 mm voxels, origin at (-8, -8, -8) mm; (k, j, i) -> (x = i, y = j, z = k) - 8."""
    a = np.zeros((4, 4))
    a[0, 2] = a[1, 1] = a[2, 0] = 1.0
    a[:3, 3] = -8.0
    a[3, 3] = 1.0
    return a


def cube(labels: np.ndarray, centre_kji: tuple[int, int, int], value: int, half: int = 1) -> None:
    k, j, i = centre_kji
    labels[k - half : k + half + 1, j - half : j + half + 1, i - half : i + half + 1] = value


def lps(kji: tuple[int, int, int]) -> list[float]:
    k, j, i = kji
    return [float(i - 8), float(j - 8), float(k - 8)]


def detection(ident: int, kji: tuple[int, int, int], prob: float, **kw: Any) -> dict[str, Any]:
    d = {
        "id": ident,
        "center_lps_mm": lps(kji),
        "diameter_mm": 3.0,
        "volume_mm3": 27.0,
        "probability": prob,
        "region": kw.get("region", "cortex"),
        "mars": kw.get("mars", "lobar"),
        "status": kw.get("status", "kept"),
        "reject_reason": kw.get("reject_reason"),
    }
    return d


def detections_json(dets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema_version": "1.0",
        "study_instance_uid": "1.2.3",
        "series_instance_uid": "1.2.3.4",
        "series_selection": {"chosen": "1.2.3.4", "reason": "test", "rejected": []},
        "acquisition": {
            "field_strength_t": 3.0,
            "echo_time_ms": 20.0,
            "slice_thickness_mm": 1.0,
            "pixel_spacing_mm": [1.0, 1.0],
            "sequence": "swi",
            "manufacturer": "SIEMENS",
        },
        "model": {"name": "test", "version": "0", "sha256": "0" * 64},
        "detections": dets,
        "timings_s": {},
    }


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """Truth (cases.jsonl + masks) and predictions for two cases.

    c1: two CMBs (labels 1 at kji (4,4,4), 2 at (11,11,11)); predictions: id 1 exactly on
        CMB 1 (mask identical), id 2 far away (FP).  -> TP 1, FP 1, FN 1
    c2: no CMB; no prediction.
    """
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    (truth / "labels").mkdir(parents=True)
    t1 = np.zeros(SHAPE, np.int32)
    cube(t1, (4, 4, 4), 1)
    cube(t1, (11, 11, 11), 2)
    write_label_map(LabelMap(t1, affine()), truth / "labels" / "c1.nii.gz")
    write_label_map(LabelMap(np.zeros(SHAPE, np.int32), affine()), truth / "labels" / "c2.nii.gz")
    acq = {
        "sequence": "swi",
        "field_strength_t": 3.0,
        "echo_time_ms": 20.0,
        "slice_thickness_mm": 1.0,
        "manufacturer": "Siemens",
        "acquisition_type": "3D",
    }
    cases = [
        {
            "case_id": "c1",
            "image": "images/c1.nii.gz",
            "label": "labels/c1.nii.gz",
            "subject": 1,
            "split": "val",
            "acquisition": acq,
            "cmbs": [
                {
                    "label": 1,
                    "center_lps_mm": lps((4, 4, 4)),
                    "diameter_true_mm": 3.0,
                    "diameter_apparent_mm": 3.5,
                    "region": "cortex",
                    "mars": "lobar",
                    "lobe": "frontal",
                },
                {
                    "label": 2,
                    "center_lps_mm": lps((11, 11, 11)),
                    "diameter_true_mm": 3.0,
                    "diameter_apparent_mm": 3.5,
                    "region": "thalamus",
                    "mars": "deep",
                    "lobe": None,
                },
            ],
            "mimics": [],
        },
        {
            "case_id": "c2",
            "image": "images/c2.nii.gz",
            "label": "labels/c2.nii.gz",
            "subject": 2,
            "split": "val",
            "acquisition": {**acq, "field_strength_t": 1.5},
            "cmbs": [],
            "mimics": [],
        },
    ]
    (truth / "cases.jsonl").write_text("\n".join(json.dumps(c) for c in cases) + "\n")
    for cid in ("c1", "c2"):
        (pred / cid).mkdir(parents=True)
    p1 = np.zeros(SHAPE, np.int32)
    cube(p1, (4, 4, 4), 1)
    cube(p1, (4, 12, 12), 2)
    write_label_map(LabelMap(p1, affine()), pred / "c1" / "labels.nii.gz")
    dets = [detection(1, (4, 4, 4), 0.9), detection(2, (4, 12, 12), 0.4, mars="deep")]
    (pred / "c1" / "detections.json").write_text(json.dumps(detections_json(dets)))
    (pred / "c2" / "detections.json").write_text(json.dumps(detections_json([])))
    return pred, truth
