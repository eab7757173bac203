"""The evaluation in one call: ``evaluate`` (folders) and ``evaluate_cases`` (in memory).

What counts as a prediction: the detections with status ``kept`` (the location
filter's rejections are not predictions); ``include_rejected=True`` counts them
too, to measure what the filter costs or saves.  With ``threshold`` only
predictions with probability >= threshold count (the operating point); the FROC
sweeps every threshold over the same candidates.

Training calls ``evaluate_cases`` each epoch with ``metrics_json=False`` and
reads ``EvaluationResult.scalars()``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.cases import CasePrediction, CaseTruth, LabelMap, PredCMB, TruthCMB
from evaluation.classification import classification_metrics, mars_agreement
from evaluation.conspicuity import CNR_BINS, measure_lesion
from evaluation.dicom_seg import read_seg_labels
from evaluation.errors import EvaluationInputError
from evaluation.froc import FrocCurve, froc
from evaluation.io import load_predictions, load_truths, pair_cases, read_image, resample_like
from evaluation.matching import CaseMatch, MatchKind, MatchRule, iou_matrix, match_case
from evaluation.metrics import detection_metrics, per_scan_metrics
from evaluation.segmentation import ScanSegmentation, scan_segmentation, segmentation_metrics
from evaluation.stratify import (
    CMB_STRATA,
    CMB_STRATA_NOTE,
    bin_label,
    size_bin,
    stratify_cmbs,
    stratify_scans,
)
from evaluation.valdo import valdo_predictions, valdo_truth

METRICS_SCHEMA_VERSION = "1.2"


@dataclass(frozen=True)
class EvaluationConfig:
    rule: MatchRule = field(default_factory=MatchRule)
    threshold: float | None = None
    include_rejected: bool = False
    n_bootstrap: int = 1000
    seed: int = 0
    froc_points: int = 100
    use_masks: bool = True  # read label maps for Dice/volumes when present
    progress: bool = False

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.n_bootstrap < 0:
            raise ValueError(f"n_bootstrap must be >= 0, got {self.n_bootstrap}")

    @property
    def reads_masks(self) -> bool:
        """Whether label maps are read: for Dice/volumes, or because the match rule needs them."""
        return self.use_masks or self.rule.kind in (MatchKind.OVERLAP, MatchKind.VALDO)

    def to_json(self) -> dict[str, Any]:
        return {
            "match": self.rule.describe(),
            "threshold": self.threshold,
            "include_rejected": self.include_rejected,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class _PreparedCase:
    """One case ready for matching at any threshold."""

    truth: CaseTruth
    cmbs: tuple[TruthCMB, ...]
    candidates: tuple[PredCMB, ...]
    acquisition: Mapping[str, Any]
    iou: np.ndarray | None  # truth x candidates, overlap rule only

    def match(self, rule: MatchRule, threshold: float | None) -> CaseMatch:
        if threshold is None:
            keep = list(range(len(self.candidates)))
        else:
            keep = [n for n, p in enumerate(self.candidates) if p.probability >= threshold]
        preds = [self.candidates[n] for n in keep]
        iou = self.iou[:, keep] if self.iou is not None else None
        return match_case(self.cmbs, preds, rule, case_id=self.truth.case_id, iou=iou)


@dataclass
class EvaluationResult:
    """Matches, per-scan segmentation and every metric of one evaluation."""

    config: EvaluationConfig
    matches: list[CaseMatch]
    segmentation: list[ScanSegmentation]
    froc: FrocCurve
    metrics: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The content of metrics.json (schema in docs/evaluation.md)."""
        return self.metrics

    def scalars(self) -> dict[str, float]:
        """Flat numbers for training logs (undefined metrics left out)."""
        d = self.metrics["detection"]["global"]
        out = {name: d[name]["value"] for name in ("precision", "recall", "f1", "fp_per_scan")}
        out["froc_cpm"] = self.froc.cpm()
        dice = self.metrics["segmentation"]["dice_per_cmb"]["mean"]
        out["dice_per_cmb"] = dice
        return {k: float(v) for k, v in out.items() if v is not None}

    def per_cmb_rows(self) -> list[dict[str, Any]]:
        """One row per true and per predicted CMB with its match (per_cmb.csv)."""
        dice = {(s.case_id, i): v for s in self.segmentation for i, v in s.cmb_dice.items()}
        rows: list[dict[str, Any]] = []
        for m in self.matches:
            by_truth, by_pred = m.pred_for_truth(), m.truth_for_pred()
            for i, t in enumerate(m.truth):
                pair = by_truth.get(i)
                rows.append(
                    _row(m.case_id, "truth", i, t.label, t.center_lps_mm, t.diameter_mm)
                    | {
                        "outcome": "TP" if pair else "FN",
                        "diameter_apparent_mm": t.diameter_apparent_mm,
                        "apparent_size_bin": CMB_STRATA["apparent_size"][0](t),
                        "probability": m.preds[pair.pred_index].probability if pair else None,
                        "matched_id": m.preds[pair.pred_index].id if pair else None,
                        "distance_mm": pair.distance_mm if pair else None,
                        "iou": pair.iou if pair else None,
                        "dice": dice.get((m.case_id, i)),
                        "region": t.region,
                        "mars": t.mars,
                        "lobe": t.lobe,
                        "status": None,
                    }
                )
            for j, p in enumerate(m.preds):
                pair = by_pred.get(j)
                matched_label = m.truth[pair.truth_index].label if pair else None
                rows.append(
                    _row(m.case_id, "pred", j, p.id, p.center_lps_mm, p.diameter_mm)
                    | {
                        "outcome": "TP" if pair else "FP",
                        "apparent_size_bin": CMB_STRATA["apparent_size"][1](p),
                        "probability": p.probability,
                        "matched_id": matched_label if pair else None,
                        "distance_mm": pair.distance_mm if pair else None,
                        "iou": pair.iou if pair else None,
                        "dice": dice.get((m.case_id, pair.truth_index)) if pair else None,
                        "region": p.region,
                        "mars": p.mars,
                        "lobe": p.lobe,
                        "status": "kept" if p.kept else f"rejected: {p.reject_reason}",
                    }
                )
        return rows


def _row(
    case_id: str,
    kind: str,
    index: int,
    ident: int | None,
    c: tuple[float, float, float],
    diameter: float | None,
) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "kind": kind,
        "index": index,
        "id": ident,
        "x_mm": c[0],
        "y_mm": c[1],
        "z_mm": c[2],
        "diameter_mm": diameter,
        "size_bin": size_bin(diameter),
    }


def _prepare(
    truth: CaseTruth, pred: CasePrediction, config: EvaluationConfig
) -> tuple[_PreparedCase, LabelMap | None, LabelMap | None]:
    rule = config.rule
    need_masks = config.reads_masks
    tmap = truth.mask.load() if (need_masks and truth.mask is not None) else None
    pmap = pred.labels.load() if (need_masks and pred.labels is not None) else None
    cmbs = truth.cmbs
    candidates = pred.predictions(include_rejected=config.include_rejected)
    if need_masks and pmap is None and pred.seg_path is not None:
        pmap = read_seg_labels(pred.seg_path, candidates)
    if rule.kind is MatchKind.VALDO:
        prob = prob_affine = None
        if pred.probability_path is not None:
            prob, prob_affine = read_image(pred.probability_path)
        cmbs = valdo_truth(cmbs, tmap)
        candidates, pmap = valdo_predictions(
            pred, prob, prob_affine, pmap, include_rejected=config.include_rejected
        )
    if tmap is not None and pmap is None and not candidates:
        # nothing predicted: the predicted mask is empty, whether or not a file was written
        pmap = LabelMap(np.zeros(tmap.array.shape, dtype=np.int32), tmap.affine)
    if tmap is not None and pmap is not None:
        pmap = resample_like(pmap, tmap)
    iou = None
    if rule.kind is MatchKind.OVERLAP and not (cmbs and candidates):
        iou = np.zeros((len(cmbs), len(candidates)))
    elif rule.kind is MatchKind.OVERLAP:
        if tmap is None or pmap is None:
            raise EvaluationInputError(
                f"case {truth.case_id}: the overlap rule needs the truth label mask and the "
                "predicted labels.nii.gz"
            )
        iou = iou_matrix(cmbs, candidates, tmap, pmap)
    acquisition = {**dict(pred.acquisition), **dict(truth.acquisition)}
    return _PreparedCase(truth, cmbs, candidates, acquisition, iou), tmap, pmap


def _local_cnr(
    truth: CaseTruth, cmbs: Sequence[TruthCMB], tmap: LabelMap | None
) -> dict[tuple[str, int], str]:
    """The ``local_cnr`` bin of each true CMB with a label, where the truth's image was read
    with its label map and both share one grid (else nothing: those CMBs go to unknown)."""
    if tmap is None or truth.image is None or not any(c.label for c in cmbs):
        return {}
    array, affine = read_image(truth.image)
    if array.shape != tmap.array.shape or not np.allclose(affine, tmap.affine, atol=1e-3):
        return {}
    out: dict[tuple[str, int], str] = {}
    for i, cmb in enumerate(cmbs):
        if cmb.label:
            cnr = measure_lesion(array, tmap.array, cmb.label)["cnr"]
            value = bin_label(cnr, CNR_BINS) if cnr is not None else None
            if value is not None:
                out[(truth.case_id, i)] = value
    return out


def evaluate_cases(
    truth: Mapping[str, CaseTruth],
    preds: Mapping[str, CasePrediction],
    config: EvaluationConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Evaluate paired in-memory cases (ids missing on either side raise UnpairedCasesError)."""
    config = config or EvaluationConfig()
    pairs = pair_cases(truth, preds)
    bar = _progress_bar(config, len(pairs), "matching")
    prepared: list[_PreparedCase] = []
    matches: list[CaseMatch] = []
    segs: list[ScanSegmentation] = []
    local_cnr: dict[tuple[str, int], str] = {}
    for t, p in pairs:
        case, tmap, pmap = _prepare(t, p, config)
        local_cnr |= _local_cnr(t, case.cmbs, tmap)
        prepared.append(case)
        m = case.match(config.rule, config.threshold)
        matches.append(m)
        segs.append(scan_segmentation(m, tmap, pmap))
        if progress is not None:
            progress(t.case_id)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    # Every case matched once per threshold; the per-stratum FROC curves reuse these.
    cache: dict[float, list[CaseMatch]] = {}

    def matcher(threshold: float) -> list[CaseMatch]:
        if threshold not in cache:
            cache[threshold] = [c.match(config.rule, threshold) for c in prepared]
        return cache[threshold]

    all_probs = [p.probability for c in prepared for p in c.candidates]
    if config.threshold is not None:
        all_probs = [v for v in all_probs if v >= config.threshold]
    bar = _progress_bar(config, min(len(set(all_probs)), config.froc_points), "FROC")
    curve = froc(
        matcher,
        all_probs,
        config.threshold,
        config.froc_points,
        progress=bar.update if bar is not None else None,
    )
    if bar is not None:
        bar.close()
    scores = [max((p.probability for p in c.candidates), default=0.0) for c in prepared]

    def froc_of(indices: Sequence[int]) -> FrocCurve:
        """The FROC of a subset of scans, on the thresholds of the global curve."""
        return froc(
            lambda t: [matcher(t)[n] for n in indices],
            all_probs,
            config.threshold,
            config.froc_points,
        )

    cmb_dice = {(s.case_id, i): v for s in segs for i, v in s.cmb_dice.items()}
    metrics: dict[str, Any] = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "config": config.to_json(),
        "n_scans": len(matches),
        "cases": [m.case_id for m in matches],
        "detection": {
            "global": detection_metrics(matches, config.n_bootstrap, config.seed),
            "per_scan": per_scan_metrics(matches),
        },
        "segmentation": segmentation_metrics(segs),
        "classification": classification_metrics(matches, scores),
        "mars_agreement": mars_agreement(matches),
        "froc": curve.to_json(),
        "stratified": {
            "scan": stratify_scans(
                matches,
                [c.acquisition for c in prepared],
                cmb_dice,
                scores=scores,
                froc_of=froc_of,
            ),
            "cmb": stratify_cmbs(matches, cmb_dice, {"local_cnr": local_cnr}),
            "cmb_note": CMB_STRATA_NOTE,
        },
    }
    return EvaluationResult(config, matches, segs, curve, metrics)


def _progress_bar(config: EvaluationConfig, total: int, desc: str) -> Any:
    if not config.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def evaluate(
    pred_dir: Path | str,
    truth: Path | str | Sequence[Path | str],
    config: EvaluationConfig | None = None,
    *,
    split: str | None = None,
) -> EvaluationResult:
    """Evaluate a predictions folder against a truth folder or point-annotation file.

    ``truth`` may be several (sets pooled: their case ids must differ).
    Without masks (``use_masks=False`` and a point rule) the truth's label
    files are not looked for: a folder of points alone can be evaluated.
    """
    config = config or EvaluationConfig()
    truth_cases = load_truths(
        [truth] if isinstance(truth, (str, Path)) else truth,
        split=split,
        masks=config.reads_masks,
    )
    return evaluate_cases(truth_cases, load_predictions(pred_dir), config)


def evaluate_matches(
    matches: Sequence[CaseMatch], n_bootstrap: int = 0, seed: int = 0
) -> dict[str, Any]:
    """Detection metrics of already matched cases (a light call for training loops)."""
    return {
        "global": detection_metrics(matches, n_bootstrap, seed),
        "per_scan": per_scan_metrics(matches),
    }
