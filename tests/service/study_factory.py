"""A small SWI study with known microbleeds (dark spheres) plus distractors, and a test model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.series_writer import StudyMeta, write_series
from tests.helpers.onnx_factory import make_test_model, sphere_phantom

SPACING = (2.0, 1.0, 1.0)
N_CMBS = 3


@dataclass
class PhantomStudy:
    root: Path
    study_instance_uid: str
    swi_series_uid: str
    n_cmbs: int
    patient_name: str
    patient_id: str


def write_phantom_study(root: Path, seed: int = 3) -> PhantomStudy:
    """SWI magnitude with 3 dark spheres, its phase series and a T1: 3 series, 60 files."""
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = [-24.0, -24.0, -20.0]
    centres = [
        affine[:3, :3] @ np.array(c, float) + affine[:3, 3]
        for c in ([8, 16, 16], [10, 32, 30], [14, 20, 36])
    ]
    volume = sphere_phantom((20, 48, 48), affine, centres, [2.0, 2.5, 2.0], noise=2.0, seed=seed)
    study = StudyMeta.synthetic(seed)
    rng = np.random.default_rng(seed)
    swi = write_series(
        volume,
        root / "swi",
        flavour="siemens_swi",
        kind="magnitude",
        study=study,
        series_number=5,
        seed=seed,
    )
    noise = rng.normal(0.0, 1.0, volume.shape).astype(np.float32)
    write_series(
        volume.with_array(noise),
        root / "phase",
        flavour="siemens_swi",
        kind="phase",
        study=study,
        series_number=6,
        seed=seed + 1,
    )
    write_series(
        volume.with_array(200 - volume.array),
        root / "t1",
        flavour="siemens_t1",
        kind="magnitude",
        study=study,
        series_number=2,
        seed=seed + 2,
    )
    from pydicom import dcmread

    first = dcmread(swi[0], stop_before_pixels=True)
    return PhantomStudy(
        root=root,
        study_instance_uid=str(first.StudyInstanceUID),
        swi_series_uid=str(first.SeriesInstanceUID),
        n_cmbs=N_CMBS,
        patient_name=str(first.PatientName),
        patient_id=str(first.PatientID),
    )


def write_model(path: Path) -> Path:
    return make_test_model(path, spacing_mm=SPACING)


def sr_cmb_count(ds: object) -> tuple[int, int]:
    """(total "Number of lesions", distinct "CMB n" tracking identifiers) of a TID 1500 SR."""
    lesions: list[float] = []
    trackers: set[str] = set()

    def walk(node: object) -> None:
        for item in getattr(node, "ContentSequence", []):
            names = getattr(item, "ConceptNameCodeSequence", [])
            meaning = names[0].CodeMeaning if names else ""
            value = str(getattr(item, "TextValue", ""))
            if meaning.startswith("Number of lesions"):
                # The study total is a TEXT item of TID 1500's Qualitative Evaluations
                # ("3"); per-site counts share the concept with a "site: n" value.
                if item.ValueType == "NUM":
                    lesions.append(float(item.MeasuredValueSequence[0].NumericValue))
                elif value.isdigit():
                    lesions.append(float(value))
            if meaning == "Tracking Identifier" and value[:4] == "CMB " and value[4:].isdigit():
                trackers.add(value)
            walk(item)

    walk(ds)
    return (int(lesions[0]) if lesions else -1), len(trackers)
