"""A tiny standardized CMB dataset for training tests: dark spheres in a noisy bright 'head'.

Written with the real layout code (``training.datasets.layout.write_case``), so
training reads it exactly as it reads a synthetic or imported dataset.  Slices
are 2 mm thick to exercise the resampling to the model spacing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.types import Volume
from training.datasets.layout import finalize, write_case

SHAPE = (24, 56, 56)
SPACING = (2.0, 1.0, 1.0)


@dataclass
class TinyCase:
    case_id: str
    image: Volume
    labels: Volume
    record: dict[str, Any]


def make_case(seed: int, n_cmbs: int, split: str = "train") -> TinyCase:
    rng = np.random.default_rng(seed)
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = [-20.0, -30.0, -30.0]
    k, j, i = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in SHAPE], indexing="ij")
    mm = np.stack([k * SPACING[0], j * SPACING[1], i * SPACING[2]], axis=-1)
    centre = np.array([SHAPE[0] * SPACING[0] / 2, SHAPE[1] / 2, SHAPE[2] / 2])
    head = (((mm - centre) / np.array([20.0, 24.0, 24.0])) ** 2).sum(-1) <= 1.0
    image = np.where(head, 100.0, 5.0) + rng.normal(0, 4.0, SHAPE)
    labels = np.zeros(SHAPE, dtype=np.int16)
    cmbs = []
    for n in range(n_cmbs):
        c = centre + rng.uniform(-10, 10, size=3) * np.array([0.8, 1.0, 1.0])
        radius = float(rng.uniform(2.0, 3.0))
        inside = ((mm - c) ** 2).sum(-1) <= radius**2
        image[inside] = 20.0 + rng.normal(0, 4.0, int(inside.sum()))
        labels[inside & (labels == 0)] = n + 1
        lps = affine[:3, :3] @ (c / np.array(SPACING)) + affine[:3, 3]
        cmbs.append(
            {
                "label": n + 1,
                "center_lps_mm": [float(x) for x in lps],
                "diameter_true_mm": 2 * radius,
                "diameter_apparent_mm": 2 * radius,
                "mars": "lobar",
            }
        )
    case_id = f"tiny-{split}-{seed:04d}"
    record = {
        "case_id": case_id,
        "image": f"images/{case_id}.nii.gz",
        "label": f"labels/{case_id}.nii.gz",
        "subject": 1 if split == "train" else 17,
        "split": split,
        "source": "test",
        "acquisition": {
            "sequence": "swi" if seed % 2 else "t2star",
            "field_strength_t": 3.0,
            "slice_thickness_mm": SPACING[0],
        },
        "cmbs": cmbs,
        "mimics": [],
    }
    return TinyCase(
        case_id,
        Volume(image.astype(np.float32), affine),
        Volume(labels.astype(np.float32), affine),  # write_case stores int16
        record,
    )


def write_tiny_layout(out: Path, n_cases: int, *, split: str = "train", seed0: int = 0) -> Path:
    """``n_cases`` cases (every third without CMBs) in the standardized layout under ``out``."""
    for n in range(n_cases):
        write_case(out, make_case(seed0 + n, 0 if n % 3 == 2 else 2, split))
    finalize(out)
    return out
