"""The pipeline (`cmb detect`'s path) writes our objects beside detections.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom

from model.pipeline import PipelineOptions, process
from model.series_writer import StudyMeta, write_series
from tests.helpers.onnx_factory import make_test_model, oblique_affine, sphere_phantom


def test_pipeline_writes_dicom_outputs(tmp_path: Path) -> None:
    affine = oblique_affine(spacing=(1.0, 1.0, 1.0))
    shape = (40, 40, 40)
    centres = [
        affine[:3, :3] @ np.array(c, float) + affine[:3, 3] for c in ((12, 14, 15), (26, 24, 25))
    ]
    volume = sphere_phantom(shape, affine, centres, [2.0, 2.0], noise=1.0)
    write_series(volume, tmp_path / "study", study=StudyMeta.synthetic(5), flavour="siemens_swi")
    model = make_test_model(tmp_path / "model.onnx")
    options = PipelineOptions(
        model_path=model, outputs=("seg", "sr", "pdf", "sc"), location="off"
    )  # the phantom is no brain
    (outputs,) = process([tmp_path / "study"], tmp_path / "out", options)
    files = outputs.files
    assert {"seg", "sr", "pdf"} <= set(files)
    detections = json.loads(Path(files["detections"]).read_text())["detections"]
    kept = [d for d in detections if d["status"] == "kept"]
    assert len(kept) == 2
    seg = pydicom.dcmread(files["seg"])
    assert len(seg.SegmentSequence) == len(kept)
    sr = pydicom.dcmread(files["sr"])
    assert sr.StudyInstanceUID == seg.StudyInstanceUID == outputs.result.study_instance_uid
    assert len(list(Path(files["seg"]).parent.glob("sc_*.dcm"))) == len(kept)
