"""The detection pipeline: DICOM (or NIfTI) files in, a `Result` and its files out.

Stages, in the order of ARCHITECTURE.md: read -> select series -> volume ->
U-Net probability (resample, normalize, sliding window) -> candidates ->
candidate classifier (when installed: ``model.candidate_classifier``) ->
location filter (when a parcellation model is available) -> outputs.

Output folder of one study (``<out_dir>/<StudyInstanceUID>/``)::

    detections.json        docs/detections.schema.json
    probability.nii.gz     float32 probability on the source grid
    labels.nii.gz          instance labels of all candidates (ids = detections[].id)
    seg.dcm, sr.dcm, ...   DICOM results (DICOM input only), see model.dicom_out

A study's folder is written to a temporary sibling first and renamed into
place, so a failure never leaves partial output and a rerun replaces the old
results atomically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.candidate_classifier import (
    UNET_KEY,
    candidate_threshold,
    classify_candidates,
    paired_with,
    unet_spacing,
)
from model.candidates import extract_candidates
from model.dicom_in import load_studies
from model.errors import InputError
from model.infer import predict_probability
from model.onnx_model import OnnxModel, load_cached
from model.paths import WEIGHTS_DIR
from model.selection import select_series
from model.series import Series, Study
from model.types import Detection, Result, Volume
from model.volume import write_nifti

log = logging.getLogger(__name__)

#: Output kinds `cmb detect --outputs` accepts. "json" and "nifti" are always written.
DICOM_OUTPUT_KINDS = ("seg", "sr", "pdf", "sc")
LOCATION_METHODS = ("auto", "onnx", "mri_synthseg", "off")
CLASSIFIER_MODES = ("auto", "on", "off")

ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PipelineOptions:
    """How to run the pipeline. Everything the model needs comes from its metadata."""

    model_path: Path | None = None  # None: the shipped default model
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None
    tta: bool = False
    threshold: float | None = None  # None: the threshold stored in the model
    # Sliding-window overlap of the U-Net: 0, as every shipped number was measured
    # (docs/model-card.md); 0.5 found no more CMBs on the selection set, at ~4x the windows.
    overlap: float = 0.0
    series_uid: str | None = None  # force this series instead of the rules' choice
    outputs: tuple[str, ...] = ("seg", "sr")
    # Location filter: "auto" runs our parcellation model when it is installed,
    # "onnx" requires it, "mri_synthseg" uses FreeSurfer, "off" skips the filter.
    location: str = "auto"
    parcellation_model_path: Path | None = None
    # Candidate classifier: "auto" runs it when installed (model/weights/cmb_classifier.onnx
    # or classifier_model_path), "on" requires it, "off" keeps the U-Net candidates as they are.
    classifier: str = "auto"
    classifier_model_path: Path | None = None
    classifier_threshold: float | None = None  # None: the threshold stored in the classifier

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.classifier not in CLASSIFIER_MODES:
            raise ValueError(
                f"classifier must be one of {CLASSIFIER_MODES}, got {self.classifier!r}"
            )
        if self.classifier_threshold is not None and not 0.0 < self.classifier_threshold < 1.0:
            raise ValueError(
                f"classifier_threshold must be in (0, 1), got {self.classifier_threshold}"
            )
        if self.location not in LOCATION_METHODS:
            raise ValueError(f"location must be one of {LOCATION_METHODS}, got {self.location!r}")
        unknown = set(self.outputs) - set(DICOM_OUTPUT_KINDS)
        if unknown:
            raise ValueError(
                f"unknown output kind(s) {sorted(unknown)}; choose from {DICOM_OUTPUT_KINDS}"
            )


@dataclass
class StudyOutputs:
    """The result of one study and the files written for it."""

    study_instance_uid: str
    result: Result
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.files["detections"].parent


class _Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0


def load_model(options: PipelineOptions) -> OnnxModel:
    return OnnxModel.load(options.model_path, device=options.device, threads=options.threads)


def load_classifier(options: PipelineOptions, unet: OnnxModel) -> tuple[OnnxModel | None, str]:
    """The candidate classifier the options ask for (None: not run) and why.

    ``auto`` runs the installed classifier only behind the U-Net it was
    trained or validated behind (``cmb.unet`` names that file's SHA-256): its
    candidate threshold, what it learned to reject and its operating point
    belong to that U-Net.
    ``on`` runs it behind any U-Net.
    """
    if options.classifier == "off":
        return None, "switched off by the user"
    path = options.classifier_model_path or WEIGHTS_DIR / "cmb_classifier.onnx"
    if not path.is_file():
        if options.classifier == "on":
            raise InputError(f"classifier 'on' but there is no classifier model at {path}")
        return None, f"no classifier model at {path}: U-Net candidates are not re-scored"
    classifier = load_cached(path, device=options.device, threads=options.threads)
    if options.classifier == "auto" and not paired_with(classifier, unet):
        trained_for = classifier.metadata.extra.get(UNET_KEY, "")
        return None, (
            f"the classifier at {path} belongs to another U-Net "
            f"({trained_for or 'unknown'}); choose it explicitly to run it"
        )
    return classifier, f"the model at {path}"


def detect_series(
    study: Study,
    model: OnnxModel,
    options: PipelineOptions,
    *,
    progress: ProgressCallback | None = None,
) -> tuple[Result, Series]:
    """Select the series of one study and run detection on it (no files written)."""
    clock = _Stopwatch()
    with clock.stage("select"):
        series, selection = select_series(study, force_series_uid=options.series_uid)
    with clock.stage("read"):
        volume = series.load_volume()
    classifier, why = load_classifier(options, model)
    # the cascade's U-Net grid belongs to the classifier (its candidates were measured there)
    grid = unet_spacing(classifier) if classifier is not None else None
    with clock.stage("infer"):
        window_progress = (lambda done, total: progress("infer", done, total)) if progress else None
        probability = predict_probability(
            volume,
            model,
            overlap=options.overlap,
            tta=options.tta,
            spacing_mm=grid,
            progress=window_progress,
        )
    if options.threshold is not None:
        threshold = options.threshold
    elif classifier is not None:
        threshold = candidate_threshold(classifier)
    else:
        threshold = model.metadata.threshold
    with clock.stage("candidates"):
        labels, detections = extract_candidates(probability, threshold)
    classification: dict[str, Any] = {"applied": False, "reason": why}
    if classifier is not None:
        with clock.stage("classify"):
            classify_candidates(
                volume, detections, classifier, threshold=options.classifier_threshold
            )
        classification = {
            "applied": True,
            "reason": why,
            "model": classifier.info.to_json(),
            "candidate_threshold": threshold,
            "unet_spacing_mm": list(grid or model.metadata.spacing_mm),
            "threshold": options.classifier_threshold or classifier.metadata.threshold,
            "rejected": sum(1 for d in detections if d.reject_reason == "classifier"),
        }
    with clock.stage("location"):
        location = _run_location_filter(
            volume, labels, detections, series, options, classified=classifier is not None
        )
    result = Result(
        study_instance_uid=study.study_instance_uid,
        series=series.info,
        selection=selection,
        detections=detections,
        probability=probability,
        labels=labels,
        model=model.info,
        timings_s=clock.timings,
        location=location,
        classifier=classification,
    )
    return result, series


def _location_method(options: PipelineOptions) -> tuple[str | None, str]:
    """The parcellation method to run (None: filter off) and why."""
    if options.location == "off":
        return None, "switched off by the user"
    if options.location != "auto":
        return options.location, "chosen by the user"
    path = options.parcellation_model_path or WEIGHTS_DIR / "parcellation.onnx"
    if path.is_file():
        return "onnx", "the installed parcellation model"
    return None, f"no parcellation model at {path}: candidates are not located or filtered"


def _run_location_filter(
    volume: Volume,
    labels: Volume,
    detections: list[Detection],
    series: Series,
    options: PipelineOptions,
    *,
    classified: bool = False,
) -> dict[str, Any]:
    """Parcellate, locate and filter the candidates in place; the summary for detections.json.

    ``classified``: the detections' probability is the candidate classifier's,
    which sets the definite/possible band of the MARS rating.
    """
    method, why = _location_method(options)
    if method is None:
        log.warning("location filter not run: %s", why)
        return {"method": "off", "reason": why}
    from model.location import locate_and_filter, mars_rating, parcellate
    from model.location.plausibility import check_anatomy
    from model.location.rating import DEFINITE_CLASSIFIER, DEFINITE_UNET

    parcellation = parcellate(
        volume, method=method, model_path=options.parcellation_model_path, device=options.device
    )
    anatomy = check_anatomy(parcellation)
    if not anatomy.plausible:
        log.warning("location filter not applied: %s", anatomy.reason)
        return {"method": method, "reason": f"not applied: {anatomy.reason}"}
    locate_and_filter(detections, labels, parcellation, series.info, image=volume)
    rejected: dict[str, int] = {}
    for det in detections:
        if not det.kept and det.reject_reason:
            rejected[det.reject_reason] = rejected.get(det.reject_reason, 0) + 1
    return {
        "method": method,
        "reason": why,
        "rejected_by_rule": rejected,
        "mars_rating": mars_rating(
            detections, definite_probability=DEFINITE_CLASSIFIER if classified else DEFINITE_UNET
        ),
    }


def process_study(
    study: Study,
    out_dir: Path,
    options: PipelineOptions,
    model: OnnxModel,
    *,
    progress: ProgressCallback | None = None,
) -> StudyOutputs:
    """Detect on one study and write its folder atomically under ``out_dir``."""
    result, series = detect_series(study, model, options, progress=progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / _safe_name(study.study_instance_uid)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=out_dir))
    try:
        t0 = time.perf_counter()
        files = _write_study_files(result, series, staging, options)
        result.timings_s["write"] = time.perf_counter() - t0
        # detections.json last, with the final timings.
        files["detections"] = staging / "detections.json"
        _write_json(files["detections"], result.to_json())
        _replace_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = {k: final / p.relative_to(staging) for k, p in files.items()}
    return StudyOutputs(study.study_instance_uid, result, files)


def process(
    inputs: Sequence[str | Path],
    out_dir: Path,
    options: PipelineOptions | None = None,
    *,
    model: OnnxModel | None = None,
    progress: ProgressCallback | None = None,
) -> list[StudyOutputs]:
    """Run the pipeline on every study found in ``inputs``.

    Raises the first study's ``CmbError``: callers that want per-study
    failures (the CLI) call ``load_studies`` and ``process_study`` themselves.
    """
    options = options or PipelineOptions()
    studies = load_studies(inputs)
    if not studies:
        raise InputError(f"no DICOM or NIfTI images found in {', '.join(map(str, inputs))}")
    model = model or load_model(options)
    return [process_study(s, Path(out_dir), options, model, progress=progress) for s in studies]


def _write_study_files(
    result: Result, series: Series, folder: Path, options: PipelineOptions
) -> dict[str, Path]:
    files: dict[str, Path] = {}
    files["probability"] = folder / "probability.nii.gz"
    write_nifti(result.probability, files["probability"])
    files["labels"] = folder / "labels.nii.gz"
    write_nifti(result.labels.with_array(result.labels.array.astype(np.float32)), files["labels"])
    if options.outputs and series.nifti_path is None:
        from model.dicom_out import write_outputs

        written = write_outputs(result, series.source_datasets(), folder, options.outputs)
        for kind, written_path in written.items():
            if isinstance(written_path, Path):
                files[kind] = written_path
            else:  # several files of one kind (Secondary Capture key images)
                for number, path in enumerate(written_path, start=1):
                    files[f"{kind}_{number}"] = Path(path)
    return files


def _write_json(path: Path, payload: object) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _replace_dir(staging: Path, final: Path) -> None:
    """Move ``staging`` to ``final``, replacing an earlier result of the same study."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(final)


def _safe_name(uid: str) -> str:
    """A UID is digits and dots; anything else (NIfTI pseudo-studies) is sanitised."""
    cleaned = "".join(c if c.isalnum() or c in ".-_" else "_" for c in uid)
    return cleaned or "study"
