"""A stand-in for `model.pipeline.process` with the same signature and outputs.

It writes detections.json and one DICOM Basic Text SR per study (so the outbox
has a real file to C-STORE), and fails on request: a series described
``FAIL_CMB`` raises NoUsableSeriesError (terminal), ``FAIL_TRANSIENT`` raises
RuntimeError (retried), ``SLEEP`` sleeps 30 s (time limit), ``SLEEP_ONCE`` sleeps 60 s on its first
attempt only (a worker killed meanwhile), ``CRASH`` ends the process at once.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from model.errors import NoUsableSeriesError
from model.types import (
    Detection,
    MarsCategory,
    ModelInfo,
    Result,
    SequenceKind,
    SeriesInfo,
    SeriesSelection,
    Volume,
)

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


@dataclass(frozen=True)
class PipelineOptions:
    model_path: Path | None = None
    device: str = "auto"
    threads: int | None = None
    tta: bool = False
    threshold: float | None = None
    overlap: float = 0.0
    series_uid: str | None = None
    outputs: tuple[str, ...] = ("seg", "sr")


@dataclass
class StudyOutputs:
    study_instance_uid: str
    result: Result
    files: dict[str, Path] = field(default_factory=dict)


def _sr(study_uid: str, series_uid: str, source: Dataset) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(BASIC_TEXT_SR)
    # Deterministic for the input series, as the real outputs are.
    uid = generate_uid(entropy_srcs=[series_uid, "fake-sr"])
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[series_uid, "fake-sr-series"])
    ds.Modality = "SR"
    ds.PatientName = source.get("PatientName", "")
    ds.PatientID = source.get("PatientID", "")
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    return ds


def process(
    inputs: Sequence[Path], out_dir: Path, options: PipelineOptions | None = None
) -> list[StudyOutputs]:
    datasets = [dcmread(p, stop_before_pixels=True) for p in inputs]
    by_series: dict[str, list[Any]] = {}
    for ds in datasets:
        by_series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    descriptions = {str(ds.get("SeriesDescription", "")) for ds in datasets}
    if "FAIL_CMB" in descriptions:
        raise NoUsableSeriesError("no SWI or T2* magnitude series in the study")
    if "FAIL_TRANSIENT" in descriptions:
        raise RuntimeError("simulated transient fault")
    if "SLEEP" in descriptions:
        time.sleep(30)
    if "CRASH" in descriptions:
        os._exit(9)  # as a segfault in native code would end the process
    marker = Path(out_dir).parent / "slept-once"
    if "SLEEP_ONCE" in descriptions and not marker.exists():
        marker.write_text("the next attempt runs normally")
        time.sleep(60)
    chosen = next(
        (uid for uid, dss in by_series.items() if dss[0].get("SeriesDescription") == "SWI"),
        next(iter(by_series)),
    )
    first = by_series[chosen][0]
    study_uid = str(first.StudyInstanceUID)
    folder = Path(out_dir) / study_uid
    folder.mkdir(parents=True, exist_ok=True)
    vol = Volume(array=np.zeros((2, 2, 2), np.float32), affine=np.eye(4))
    result = Result(
        study_instance_uid=study_uid,
        series=SeriesInfo(study_uid, chosen, "MR", SequenceKind.SWI, n_instances=3),
        selection=SeriesSelection(chosen, "fake: series described SWI"),
        detections=[
            Detection(1, (1.0, 2.0, 3.0), 3.0, 14.1, 0.9, mars=MarsCategory.LOBAR),
            Detection(2, (4.0, 5.0, 6.0), 2.5, 8.2, 0.8, mars=MarsCategory.DEEP),
        ],
        probability=vol,
        labels=vol,
        model=ModelInfo("fake", "0.0", "0" * 64),
        timings_s={"infer": 0.01},
    )
    files: dict[str, Path] = {"detections": folder / "detections.json"}
    files["detections"].write_text(json.dumps(result.to_json()))
    if "sr" in (options.outputs if options else ("sr",)):
        files["sr"] = folder / "sr.dcm"
        _sr(study_uid, chosen, first).save_as(files["sr"], enforce_file_format=True)
    return [StudyOutputs(study_uid, result, files)]
