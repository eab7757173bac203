"""Detection validation of an exported model on the fixed held-out set.

Runs the *product's* inference path on each validation case
(``model.infer.predict_probability`` on the ONNX file, then
``model.candidates.extract_candidates`` at each candidate threshold), matches
predictions to the true CMBs with the evaluation package
(``evaluation.matching.match_case``, its default rule), and summarises recall,
precision and false positives per scan per threshold.  The threshold stored in
the exported model is the one with the highest recall at no more than
``max_fp_per_scan`` (ties: the higher threshold); when no threshold gets there,
the one with the best F1.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.cases import PredCMB, TruthCMB, parse_cmbs
from evaluation.matching import MatchRule, match_case
from model.candidate_classifier import candidate_threshold, classify_candidates, unet_spacing
from model.candidates import extract_candidates
from model.infer import predict_probability
from model.onnx_model import OnnxModel
from model.types import Detection
from training.data import CaseRef, list_cases, load_volumes
from training.errors import TrainingInputError

log = logging.getLogger(__name__)

#: CMBs at least this large (apparent diameter, mm) form the "large" size bin of the issue.
LARGE_MM = 3.0


def is_large(cmb: TruthCMB) -> bool:
    """In the issue's "large" bin (apparent diameter, else the true one, >= ``LARGE_MM``)."""
    return (cmb.match_diameter_mm or 0.0) >= LARGE_MM


@dataclass
class Counts:
    """Detection counts of a group of scans at one threshold."""

    scans: int = 0
    truth: int = 0
    tp: int = 0
    pred: int = 0
    truth_large: int = 0
    tp_large: int = 0
    positive_scans: int = 0
    positive_scans_hit: int = 0  # scans with CMBs and at least one prediction
    negative_scans: int = 0
    negative_scans_clean: int = 0  # scans without CMBs and without predictions

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def summary(self) -> dict[str, Any]:
        fp = self.pred - self.tp
        recall = self.tp / self.truth if self.truth else None
        precision = self.tp / self.pred if self.pred else None
        f1 = (
            2 * recall * precision / (recall + precision)
            if recall is not None and precision is not None and (recall + precision) > 0
            else 0.0
        )
        return {
            "scans": self.scans,
            "cmbs": self.truth,
            "tp": self.tp,
            "fp": fp,
            "recall": recall,
            "recall_ge3mm": self.tp_large / self.truth_large if self.truth_large else None,
            "cmbs_ge3mm": self.truth_large,
            "precision": precision,
            "f1": f1,
            "fp_per_scan": fp / self.scans if self.scans else None,
            "scan_sensitivity": (
                self.positive_scans_hit / self.positive_scans if self.positive_scans else None
            ),
            "scan_specificity": (
                self.negative_scans_clean / self.negative_scans if self.negative_scans else None
            ),
        }


@dataclass
class CaseResult:
    case_id: str
    groups: dict[str, str]
    by_threshold: dict[float, Counts] = field(default_factory=dict)


def _groups(record: dict[str, Any]) -> dict[str, str]:
    acq = record.get("acquisition") or {}
    thick = acq.get("slice_thickness_mm")
    if isinstance(thick, int | float):
        thick_bin = "<=2mm" if thick <= 2.0 else ("2-4mm" if thick <= 4.0 else ">4mm")
    else:
        thick_bin = "unknown"
    field_t = acq.get("field_strength_t")
    return {
        "sequence": str(acq.get("sequence", "unknown")),
        "field_strength_t": f"{field_t:g}T" if isinstance(field_t, int | float) else "unknown",
        "slice_thickness": thick_bin,
    }


def evaluate_case(
    ref: CaseRef,
    model: OnnxModel,
    thresholds: Sequence[float],
    *,
    rule: MatchRule | None = None,
    overlap: float = 0.5,
    save_dir: Path | None = None,
    classifier: OnnxModel | None = None,
) -> CaseResult:
    """Counts of one validation case at every threshold.

    With a ``classifier`` (the cascade of ``model.candidate_classifier``),
    the U-Net runs on its grid (``cmb.unet_spacing_mm``, when it has one),
    candidates are extracted once at its candidate threshold, scored, and the
    thresholds apply to the classifier's probability instead of the U-Net map.

    With ``save_dir``, the candidates at the lowest threshold are written to
    ``save_dir/<case_id>/detections.json`` for ``cmb evaluate`` (FROC, strata).
    """
    image, _labels = load_volumes(ref)
    grid = unet_spacing(classifier) if classifier is not None else None
    probability = predict_probability(image, model, overlap=overlap, spacing_mm=grid)
    truth = parse_cmbs(ref.case_id, ref.record.get("cmbs"))
    large = [is_large(t) for t in truth]
    result = CaseResult(ref.case_id, _groups(ref.record))
    scored: list[Detection] | None = None
    if classifier is not None:
        _, scored = extract_candidates(probability, candidate_threshold(classifier))
        classify_candidates(image, scored, classifier, threshold=0.0)
    if save_dir is not None:
        if scored is not None:
            detections = scored
        else:
            _, detections = extract_candidates(probability, min(thresholds))
        folder = save_dir / ref.case_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "detections.json").write_text(
            json.dumps(
                {
                    "case_id": ref.case_id,
                    "acquisition": ref.record.get("acquisition") or {},
                    "model": model.info.to_json(),
                    "candidate_threshold": (
                        candidate_threshold(classifier) if classifier else min(thresholds)
                    ),
                    "detections": [d.to_json() for d in detections],
                },
                indent=1,
            )
        )
    for threshold in thresholds:
        if scored is not None:
            detections = [d for d in scored if d.probability >= threshold]
        else:
            _, detections = extract_candidates(probability, threshold)
        preds = [PredCMB.from_detection(d) for d in detections]
        match = match_case(truth, preds, rule, case_id=ref.case_id)
        matched = {p.truth_index for p in match.pairs}
        result.by_threshold[float(threshold)] = Counts(
            scans=1,
            truth=len(truth),
            tp=match.tp,
            pred=len(preds),
            truth_large=sum(large),
            tp_large=sum(1 for n in matched if large[n]),
            positive_scans=int(bool(truth)),
            positive_scans_hit=int(bool(truth) and bool(preds)),
            negative_scans=int(not truth),
            negative_scans_clean=int(not truth and not preds),
        )
    return result


def choose_threshold(per_threshold: dict[float, dict[str, Any]], max_fp_per_scan: float) -> float:
    """Highest recall at <= max_fp_per_scan (ties: higher threshold); else best F1."""
    ok = [
        (s["recall"] or 0.0, t)
        for t, s in per_threshold.items()
        if s["fp_per_scan"] is not None and s["fp_per_scan"] <= max_fp_per_scan
    ]
    if ok:
        return max(ok)[1]
    return max((s["f1"] or 0.0, t) for t, s in per_threshold.items())[1]


_WORKER_MODEL: OnnxModel | None = None
_WORKER_CLASSIFIER: OnnxModel | None = None


def _init_worker(model_path: str, threads: int, classifier_path: str | None = None) -> None:
    global _WORKER_MODEL, _WORKER_CLASSIFIER
    _WORKER_MODEL = OnnxModel.load(model_path, device="cpu", threads=threads)
    if classifier_path is not None:
        _WORKER_CLASSIFIER = OnnxModel.load(classifier_path, device="cpu", threads=threads)


def _worker_case(
    ref: CaseRef,
    thresholds: tuple[float, ...],
    rule: MatchRule,
    overlap: float,
    save_dir: Path | None,
) -> CaseResult:
    if _WORKER_MODEL is None:
        raise RuntimeError("validation worker used before its model was loaded")
    return evaluate_case(
        ref,
        _WORKER_MODEL,
        thresholds,
        rule=rule,
        overlap=overlap,
        save_dir=save_dir,
        classifier=_WORKER_CLASSIFIER,
    )


def validate_model(
    model_path: str | Path,
    refs: Sequence[CaseRef],
    thresholds: Sequence[float],
    *,
    max_fp_per_scan: float = 0.5,
    overlap: float = 0.5,
    rule: MatchRule | None = None,
    threads: int | None = None,
    progress: Callable[[Iterable[CaseRef]], Iterable[CaseRef]] | None = None,
    save_dir: str | Path | None = None,
    workers: int = 1,
    classifier_path: str | Path | None = None,
) -> dict[str, Any]:
    """Validate an ONNX model file; returns a JSON-able report (see module docstring).

    ``workers`` > 1 runs cases in that many processes (``threads`` each, default 1).
    ``classifier_path``: validate the cascade U-Net + candidate classifier; the
    thresholds then apply to the classifier's probability.
    """
    if not refs:
        raise TrainingInputError("validation needs at least one case")
    start = time.monotonic()
    rule = rule or MatchRule()
    save = Path(save_dir) if save_dir is not None else None
    results: list[CaseResult]
    if workers > 1:
        # one model per worker process, one thread each: on a small CPU this beats
        # one process with several intra-op threads
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(
                str(model_path),
                threads or 1,
                str(classifier_path) if classifier_path is not None else None,
            ),
        ) as pool:
            jobs = [
                pool.submit(_worker_case, ref, tuple(thresholds), rule, overlap, save)
                for ref in refs
            ]
            done = progress(as_completed(jobs)) if progress else as_completed(jobs)  # type: ignore[arg-type]
            for _ in done:
                pass
            results = [j.result() for j in jobs]
    else:
        model = OnnxModel.load(model_path, device="cpu", threads=threads)
        classifier = (
            OnnxModel.load(classifier_path, device="cpu", threads=threads)
            if classifier_path is not None
            else None
        )
        results = [
            evaluate_case(
                ref,
                model,
                thresholds,
                rule=rule,
                overlap=overlap,
                save_dir=save,
                classifier=classifier,
            )
            for ref in (progress(refs) if progress else refs)
        ]
    per_threshold: dict[float, dict[str, Any]] = {}
    for t in thresholds:
        total = Counts()
        for r in results:
            total.add(r.by_threshold[float(t)])
        per_threshold[float(t)] = total.summary()
    chosen = choose_threshold(per_threshold, max_fp_per_scan)
    strata: dict[str, dict[str, Any]] = {}
    for key in ("sequence", "field_strength_t", "slice_thickness"):
        groups: dict[str, Counts] = {}
        for r in results:
            groups.setdefault(r.groups[key], Counts()).add(r.by_threshold[chosen])
        strata[key] = {g: c.summary() for g, c in sorted(groups.items())}
    summary = dict(per_threshold[chosen])
    summary["threshold"] = chosen
    summary["match_rule"] = rule.describe()
    summary["max_fp_per_scan"] = max_fp_per_scan
    return {
        "threshold": chosen,
        "summary": summary,
        "per_threshold": {f"{t:g}": s for t, s in per_threshold.items()},
        "strata": strata,
        "cases": [r.case_id for r in results],
        "per_case": {
            r.case_id: {
                "groups": r.groups,
                "at_threshold": dataclasses.asdict(r.by_threshold[chosen]),
            }
            for r in results
        },
        "overlap": overlap,
        "seconds": round(time.monotonic() - start, 1),
    }


def validate_on_folders(
    model_path: str | Path,
    val_dirs: Sequence[str | Path],
    thresholds: Sequence[float],
    **options: Any,
) -> dict[str, Any]:
    """:func:`validate_model` on every case of ``val_dirs``; the report names the folders.

    What ``cmb export``, ``cmb classifier export`` and ``training.renormalize``
    embed in a file: the report's ``data`` says which folders chose its threshold.
    """
    report = validate_model(model_path, list_cases(val_dirs), tuple(thresholds), **options)
    report["data"] = [str(d) for d in val_dirs]
    return report
