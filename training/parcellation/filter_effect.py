"""Effect of the location filter behind the shipped cascade, on the held-out validation set.

:mod:`training.parcellation.rule_effect` measures each rule on the objects
the synthetic engine placed (true CMBs and mimics at their true centres).
This module measures what the product does: for every case of a validation
folder (``cmb synth ... --split val``) the detection path runs once, as
:func:`model.pipeline.detect_series` runs it (U-Net probability from the ONNX
file, candidates at the classifier's candidate threshold, classifier scores),
and the candidates scoring at least ``min_score`` are located on the shipped
ONNX parcellation of the image.  The rules then run in several
configurations: none, all (the defaults), each rule alone, and all but one.
Each configuration's kept candidates are matched to the true CMBs with the
evaluation package's default rule, at every classifier threshold.

Written to ``--out``: ``cases.jsonl`` (per case: truth, and every candidate
with its score, per configuration the rule that rejects it, and the numbers a
stacked score could read, :func:`score_features`) and
``filter_effect.json`` (the totals, at the end).  ``cases.jsonl`` grows by
one line per case, so a stopped run keeps what it measured and resumes after
it; :func:`summarise` (``--summarise``) recomputes the tables (and
``filter_effect.json``) from it without running the networks again.  With
``--cache DIR`` each case's network outputs (the candidates with their
scores, the candidate label volume and the parcellation) are kept too, and
``--replay DIR`` re-runs only the location and the rules from them (seconds
per case instead of minutes): how a change to a rule is measured.
``--shard K N`` measures every N-th case from the K-th, so that N processes
share a set (``scripts/device/lease_filter_effect.sh``);
``--summarise --join DIR ...`` joins their folders' records into ``--out``.

    nice -n 5 .venv/bin/python -m training.parcellation.filter_effect \\
        --data runs/data/val --out runs/filter_effect --overlap 0
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import math
import pickle
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from evaluation.cases import PredCMB, TruthCMB, parse_cmbs
from evaluation.matching import MatchRule, match_case
from evaluation.stratify import UNKNOWN, size_bin, stratum_sort_key
from model.candidate_classifier import TASK as CLASSIFIER_TASK
from model.candidate_classifier import (
    candidate_threshold,
    classify_candidates,
    identity_grid,
    unet_identity,
    unet_spacing,
)
from model.candidates import extract_candidates
from model.errors import InputError
from model.infer import predict_probability
from model.location import LocationConfig, apply_rules, locate, parcellate
from model.location import labels as lt
from model.location import rules as rule_codes
from model.location.lobes import BrainFrame
from model.location.region import Region
from model.location.vessel import dark_structure
from model.onnx_model import OnnxModel, default_model_path
from model.types import Detection, DetectionStatus, SequenceKind, SeriesInfo, Volume
from training.data import CaseRef, list_cases, load_volumes
from training.validate import choose_threshold, is_large

# classifier thresholds of the tables and of the operating point: 0.02 apart from 0.6 to 0.98
# (an ensemble's mean probabilities are less extreme than one network's), and the odd
# hundredths above 0.9 measured before
THRESHOLDS = tuple(
    sorted({0.5, *(round(0.6 + 0.02 * n, 2) for n in range(20)), 0.93, 0.95, 0.97, 0.99})
)
MAX_FP_PER_SCAN = 0.5  # issue 5's operating constraint


def configurations(base: LocationConfig | None = None) -> dict[str, LocationConfig]:
    """none, the defaults, all rules, each rule alone ("only X"), all but one ("without X")."""
    cfg = base or LocationConfig()
    codes = rule_codes.REASON_CODES
    every = dataclasses.replace(cfg, **{code: True for code in codes})
    out = {
        "none": dataclasses.replace(cfg, **{code: False for code in codes}),
        "defaults": cfg,
        "all": every,
    }
    for code in codes:
        out[f"only {code}"] = every.only(code)
    for code in codes:
        out[f"without {code}"] = dataclasses.replace(every, **{code: False})
    # what reading the image adds to `tubular` (the candidate's own shape only)
    out["defaults, tubular on the mask only"] = dataclasses.replace(cfg, tubular_on_image=False)
    return out


def measure_case(
    ref: CaseRef,
    unet: OnnxModel,
    classifier: OnnxModel,
    configs: dict[str, LocationConfig],
    *,
    overlap: float,
    min_score: float,
    cache: Path | None = None,
    unet_threshold: float | None = None,
    unet_spacing_mm: tuple[float, float, float] | None = None,
    unet_tta: bool = False,
) -> dict[str, Any]:
    """One case's record for ``cases.jsonl`` (its network outputs to ``cache`` if given).

    ``unet_threshold``: the U-Net probability at which candidates are extracted
    (default: the classifier's ``cmb.candidate_threshold``, as in the product);
    ``unet_spacing_mm``: the grid the U-Net runs on (default: the classifier's
    ``cmb.unet_spacing_mm``, else the U-Net's own, as in the product);
    ``unet_tta``: the U-Net's probability is the mean over the 8 axis flips
    (``cmb detect --tta``), and the record's U-Net says so.
    """
    grid = unet_spacing(classifier) if unet_spacing_mm is None else unet_spacing_mm
    image, _ = load_volumes(ref)
    probability = predict_probability(image, unet, overlap=overlap, tta=unet_tta, spacing_mm=grid)
    threshold = candidate_threshold(classifier) if unet_threshold is None else unet_threshold
    labels, detections = extract_candidates(probability, threshold)
    classify_candidates(image, detections, classifier, threshold=0.0)
    parc = parcellate(image, device="cpu")  # the shipped model
    identity = unet_identity(unet, grid)
    if unet_tta:
        identity = with_tta(identity)
    if cache is not None:
        save_outputs(cache / f"{ref.case_id}.pkl", detections, labels, parc, identity, threshold)
    return apply_configurations(
        ref,
        detections,
        labels,
        parc,
        configs,
        min_score=min_score,
        image=image,
        unet=identity,
        unet_threshold=threshold,
    )


#: What :func:`with_tta` adds to a U-Net's identity.
UNET_TTA_TAG = " with 8-flip TTA"


def with_tta(identity: str) -> str:
    """A :func:`unet_identity` naming candidates of the 8-flip mean (before any grid, which
    :func:`identity_grid` reads from the end), so that ``choose`` and ``set-threshold``,
    which compare identities, never take them for the plain U-Net's."""
    sha_end = identity.find(" ", identity.index("sha256:"))
    if sha_end < 0:
        return identity + UNET_TTA_TAG
    return identity[:sha_end] + UNET_TTA_TAG + identity[sha_end:]


def apply_configurations(
    ref: CaseRef,
    detections: list[Detection],
    labels: Volume,
    parc: Volume,
    configs: dict[str, LocationConfig],
    *,
    min_score: float = 0.5,
    image: Volume | None = None,
    unet: str = "",
    unet_threshold: float | None = None,
) -> dict[str, Any]:
    """Locate the candidates on ``parc`` and record which rule rejects each, per configuration.

    Candidates scoring below ``min_score`` are neither located nor recorded
    (locating costs time); they stay in the list as classifier-rejected, as in
    the product, where a rule may still read them (a symmetric partner).
    ``image`` (the series) lets ``tubular`` read the dark structure through
    each candidate, and its shape is recorded with the region's features.
    ``unet`` names the U-Net that made the candidates ("" when not known),
    ``unet_threshold`` the probability they were extracted at (None when not known).
    """
    acquisition = ref.record.get("acquisition") or {}
    info = SeriesInfo("1", "2", "MR", SequenceKind(acquisition.get("sequence", "swi")))
    detections = [copy.deepcopy(d) for d in detections]
    for d in detections:
        if d.probability < min_score:
            d.reject("classifier")
    regions, frame = locate(detections, parc)
    rejected: dict[str, list[str | None]] = {}
    for name, cfg in configs.items():
        copies = [copy.deepcopy(d) for d in detections]
        apply_rules(copies, regions, frame, labels, info, cfg, image=image)
        rejected[name] = [d.reject_reason for d in copies]
    truth = list(ref.record.get("cmbs") or [])
    return {
        "case_id": ref.case_id,
        "acquisition": acquisition,
        "truth": truth,
        "unet": unet,
        "unet_threshold": unet_threshold,
        "unet_candidates": _unet_candidates(ref.case_id, truth, detections),
        "candidates": [
            {
                "detection": d.to_json(),
                "rejected_by": {name: reasons[n] for name, reasons in rejected.items()},
                "region": _region_features(regions[d.id], d, frame),
                "dark_structure": _structure_features(image, d),
                "features": score_features(image, d),
            }
            for n, d in enumerate(detections)
            if d.id in regions
        ],
    }


def _unet_candidates(
    case_id: str, truth: list[dict[str, Any]], detections: list[Detection]
) -> dict[str, Any]:
    """All of the U-Net's candidates, scored or not: how many, and which true CMBs they hold.

    The classifier and the rules can only keep what is here, so the share of
    true CMBs found is the ceiling of the product path's recall.
    """
    cmbs = parse_cmbs(case_id, truth)
    preds = [
        PredCMB.from_json(d.to_json(), f"{case_id} candidate {i}") for i, d in enumerate(detections)
    ]
    match = match_case(cmbs, preds, case_id=case_id)
    return {"n": len(preds), "truth_found": sorted(match.pred_for_truth())}


def save_outputs(
    path: Path,
    detections: list[Detection],
    labels: Volume,
    parc: Volume,
    unet: str = "",
    unet_threshold: float | None = None,
) -> None:
    """The networks' outputs of one case, for :func:`replay` (candidate labels as uint16).

    ``unet`` names the U-Net that made the candidates (``unet_identity``),
    ``unet_threshold`` the probability they were extracted at.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "unet": unet,
        "unet_threshold": unet_threshold,
        "detections": detections,
        "labels": (labels.array.astype(np.uint16), labels.affine),
        "parcellation": (parc.array.astype(np.int16), parc.affine),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    tmp.replace(path)


class CachedOutputs(NamedTuple):
    detections: list[Detection]
    labels: Volume
    parcellation: Volume
    #: the U-Net that made the candidates ("" in caches written before it was recorded)
    unet: str
    #: the U-Net probability they were extracted at (None in caches written before)
    unet_threshold: float | None


def load_outputs(path: Path) -> CachedOutputs:
    """What :func:`save_outputs` wrote (a file this tool made: pickle is fine here)."""
    payload = pickle.loads(path.read_bytes())
    lab, lab_affine = payload["labels"]
    parc, parc_affine = payload["parcellation"]
    return CachedOutputs(
        payload["detections"],
        Volume(lab.astype(np.float32), lab_affine),
        Volume(parc.astype(np.float32), parc_affine),
        payload.get("unet", ""),
        payload.get("unet_threshold"),
    )


def cached_cases(data: Path, cache: Path) -> Iterator[tuple[CaseRef, CachedOutputs]]:
    """The cases of ``data`` with the outputs a ``--cache`` run kept (others skipped, and said)."""
    for ref in list_cases([data]):
        path = cache / f"{ref.case_id}.pkl"
        if not path.is_file():
            print(f"{ref.case_id}: no cached outputs in {cache}, skipped")
            continue
        yield ref, load_outputs(path)


def _region_features(region: Region, det: Detection, frame: BrainFrame | None) -> dict[str, Any]:
    """What the rules read of a region, for tuning their thresholds offline."""
    atrium = None
    if frame is not None:
        atrium = [round(x, 1) for x in frame.from_pulvinar(det.center_lps_mm)]
    return {
        "lateral_ventricle_fraction": round(
            region.neighbourhood.fraction(lt.LATERAL_VENTRICLES), 3
        ),
        "behind_above_pulvinar_mm": atrium,
        "label": region.label,
        "parenchyma_fraction": round(region.neighbourhood.parenchyma_fraction, 3),
        "fluid_fraction": round(region.neighbourhood.fluid_fraction, 3),
        "distance_cortex_mm": round(region.distance_cortex_mm, 2),
        "distance_ventricle_mm": round(region.distance_ventricle_mm, 2),
        "distance_deep_nuclei_mm": round(region.distance_deep_nuclei_mm, 2),
        "wm_subclass": region.wm_subclass,
    }


def _logit(p: float) -> float:
    q = min(max(float(p), 1e-4), 1.0 - 1e-4)
    return math.log(q / (1.0 - q))


def score_features(image: Volume | None, det: Detection) -> dict[str, float] | None:
    """What a score stacked on the classifier's could read of a candidate besides its location
    (:mod:`training.classifier.stacking`): the classifier's and the U-Net's scores as logits,
    the U-Net component's size and shape, the series' own voxel size (slice, in-plane mean).

    None without the image, or for a candidate the classifier did not score.
    """
    if image is None or det.unet_probability is None:
        return None
    slice_mm, row_mm, col_mm = image.spacing
    values = {
        "classifier_logit": _logit(det.probability),
        "unet_logit": _logit(det.unet_probability),
        "unet_mean_logit": _logit(det.mean_probability),
        "log_diameter_mm": math.log(max(float(det.diameter_mm), 0.1)),
        "elongation": float(det.elongation),
        "slice_mm": slice_mm,
        "inplane_mm": (row_mm + col_mm) / 2.0,
    }
    return {k: round(v, 5) for k, v in values.items()}


def _structure_features(image: Volume | None, det: Detection) -> dict[str, Any] | None:
    """What ``tubular`` reads of the image (:mod:`model.location.vessel`), for tuning offline."""
    structure = dark_structure(image, det.center_lps_mm) if image is not None else None
    if structure is None:
        return None
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(structure).items()}


def summarise(
    cases: Sequence[dict[str, Any]], thresholds: Iterable[float] = THRESHOLDS
) -> dict[str, Any]:
    """Per configuration and classifier threshold: TP, FP, recall, FP/scan (and >= 3 mm)."""
    if not cases:
        raise ValueError("no cases to summarise")
    names = _configuration_names(cases)
    # parse each case once: its truth, which CMBs are large, its candidates
    parsed = []
    for case in cases:
        truth = parse_cmbs(case["case_id"], case["truth"])
        candidates = [
            (PredCMB.from_json(c["detection"], f"{case['case_id']} candidate {i}"), c)
            for i, c in enumerate(case["candidates"])
        ]
        parsed.append((case["case_id"], truth, [is_large(t) for t in truth], candidates))
    n_truth = sum(len(truth) for _, truth, _, _ in parsed)
    truth_large = sum(sum(large) for _, _, large, _ in parsed)
    positive_scans = sum(1 for _, truth, _, _ in parsed if truth)
    negative_scans = len(parsed) - positive_scans
    table: dict[str, dict[str, dict[str, float | int]]] = {}
    for name in names:
        table[name] = {}
        for t in thresholds:
            tp = fp = tp_large = true_pos_scans = false_pos_scans = 0
            for case_id, truth, large, candidates in parsed:
                match = match_case(truth, kept(candidates, name, t), case_id=case_id)
                preds = match.preds
                tp += match.tp
                fp += match.fp
                tp_large += sum(1 for p in match.pairs if large[p.truth_index])
                if preds and truth:
                    true_pos_scans += 1
                elif preds:
                    false_pos_scans += 1
            table[name][f"{t:g}"] = {
                "tp": tp,
                "fp": fp,
                "recall": _ratio(tp, n_truth),
                "recall_large": _ratio(tp_large, truth_large),
                "precision": _ratio(tp, tp + fp),
                "f1": _ratio(2 * tp, 2 * tp + fp + (n_truth - tp)),
                "fp_per_scan": round(fp / len(cases), 4),
                "scan_sensitivity": _ratio(true_pos_scans, positive_scans),
                "scan_specificity": _ratio(negative_scans - false_pos_scans, negative_scans),
            }
    return {
        "match_rule": MatchRule().describe(),
        "n_cases": len(cases),
        "n_truth": n_truth,
        "n_truth_large": truth_large,
        "unet": measured_behind(cases),
        "unet_threshold": unet_threshold_of(cases),
        "unet_candidates": _candidate_ceiling(parsed, cases),
        "by_configuration": table,
    }


def kept(
    candidates: Sequence[tuple[PredCMB, dict[str, Any]]], configuration: str, threshold: float
) -> list[PredCMB]:
    """The candidates (parsed, with their records) that ``configuration``'s rules keep and
    that score at least ``threshold``: what the product reports at that operating point."""
    return [
        pred
        for pred, c in candidates
        if pred.probability >= threshold and c["rejected_by"].get(configuration) is None
    ]


def _candidate_ceiling(
    parsed: Sequence[tuple[str, Sequence[TruthCMB], list[bool], Any]],
    cases: Sequence[dict[str, Any]],
) -> dict[str, Any] | None:
    """The U-Net candidates' count per scan and recall ceiling (None if a case lacks them),
    also per apparent-size bin of the evaluation report (``by_apparent_size``: n, tp)."""
    if any("unet_candidates" not in case for case in cases):
        return None
    found = found_large = n_truth = n_large = n_candidates = 0
    by_size: dict[str, dict[str, int]] = {}
    for (_, truth, large, _), case in zip(parsed, cases, strict=True):
        hits = case["unet_candidates"]["truth_found"]
        n_candidates += case["unet_candidates"]["n"]
        found += len(hits)
        found_large += sum(1 for i in hits if large[i])
        n_truth += len(truth)
        n_large += sum(large)
        for i, cmb in enumerate(truth):
            cell = by_size.setdefault(
                size_bin(cmb.diameter_apparent_mm) or UNKNOWN, {"n": 0, "tp": 0}
            )
            cell["n"] += 1
            cell["tp"] += int(i in hits)
    return {
        "per_scan": round(n_candidates / len(cases), 2),
        "tp": found,
        "recall": _ratio(found, n_truth),
        "recall_large": _ratio(found_large, n_large),
        "by_apparent_size": {k: by_size[k] for k in sorted(by_size, key=stratum_sort_key)},
    }


def measured_behind(cases: Sequence[dict[str, Any]]) -> str:
    """The U-Net all ``cases`` were measured behind; "" if a case does not say or they differ."""
    names = {case.get("unet", "") for case in cases}
    return names.pop() if len(names) == 1 else ""


def unet_threshold_of(cases: Sequence[dict[str, Any]]) -> float | None:
    """The U-Net threshold all ``cases``' candidates were extracted at; None if unknown or mixed."""
    values = {case.get("unet_threshold") for case in cases}
    value = values.pop() if len(values) == 1 else None
    return float(value) if value is not None else None


def _ratio(num: int, den: int) -> float:
    return round(num / den, 4) if den else 0.0


def operating_point(
    summary: dict[str, Any],
    configuration: str = "defaults",
    max_fp_per_scan: float = MAX_FP_PER_SCAN,
) -> float:
    """The classifier threshold the export rule picks for the product path with these rules.

    :func:`training.validate.choose_threshold`: the highest recall at
    <= ``max_fp_per_scan`` (ties: the higher threshold), else the best F1.
    Run it on a selection set, not on the set that reports the result.
    """
    rows = summary["by_configuration"][configuration]
    return choose_threshold({float(t): row for t, row in rows.items()}, max_fp_per_scan)


def _configuration_names(cases: Sequence[dict[str, Any]]) -> list[str]:
    """The configurations recorded with the candidates (cases without any say nothing)."""
    for case in cases:
        for cand in case["candidates"]:
            return list(cand["rejected_by"])
    return list(configurations())


def rule_table(summary: dict[str, Any], threshold: float) -> str:
    """Markdown: per configuration at ``threshold``, FPs removed and true CMBs lost vs none."""
    by = summary["by_configuration"]
    key = f"{threshold:g}"
    base = by["none"][key]
    lines = [
        "| rules | FPs removed | true CMBs lost | recall | recall ≥ 3 mm | FP/scan |",
        "|---|---|---|---|---|---|",
    ]
    for name, per in by.items():
        row = per[key]
        removed = base["fp"] - row["fp"]
        lost = base["tp"] - row["tp"]
        share = f" ({100 * removed / base['fp']:.0f} %)" if base["fp"] else ""
        lines.append(
            f"| {name} | {removed}/{base['fp']}{share} | {lost}/{base['tp']} | "
            f"{row['recall']:.3f} | {row['recall_large']:.3f} | {row['fp_per_scan']:.2f} |"
        )
    return "\n".join(lines)


def run(
    data: Path,
    out: Path,
    *,
    overlap: float = 0.0,
    min_score: float = 0.5,
    limit: int | None = None,
    threads: int = 1,
    cache: Path | None = None,
    unet_path: Path | None = None,
    unet_threshold: float | None = None,
    unet_spacing_mm: tuple[float, float, float] | None = None,
    shard: tuple[int, int] | None = None,
    unet_tta: bool = False,
) -> dict[str, Any]:
    """Measure every case of ``data`` (resuming after the cases already in ``out``).

    ``shard`` ``(k, n)`` measures only every n-th case from the k-th (0-based), so
    that n processes share a set; their ``cases.jsonl`` concatenated and
    ``--summarise``d give the whole set's tables.

    ``unet_path`` is the U-Net whose candidates are measured (default: the
    shipped one); each case's record names it (and the grid it ran on, when
    not its own), and so does the summary.
    ``unet_threshold`` extracts them at another U-Net probability than the
    classifier's ``cmb.candidate_threshold``, ``unet_spacing_mm`` on another
    grid than the classifier's ``cmb.unet_spacing_mm`` (or the U-Net's own).
    """
    out.mkdir(parents=True, exist_ok=True)
    unet = OnnxModel.load(
        unet_path or default_model_path("cmb_segmentation"), device="cpu", threads=threads
    )
    classifier = OnnxModel.load(default_model_path(CLASSIFIER_TASK), device="cpu", threads=threads)
    configs = configurations()
    cases_file = out / "cases.jsonl"
    _drop_partial_record(cases_file)
    done = read_cases(cases_file)
    seen = {c["case_id"] for c in done}
    refs = list_cases([data])[:limit]
    if shard is not None:
        k, n_shards = shard
        refs = refs[k::n_shards]
    if not refs:
        where = f" for shard {shard[0]} of {shard[1]}" if shard else ""
        raise ValueError(f"{data}: no cases to measure{where}")
    for n, ref in enumerate(refs):
        if ref.case_id in seen:
            continue
        record = measure_case(
            ref,
            unet,
            classifier,
            configs,
            overlap=overlap,
            min_score=min_score,
            cache=cache,
            unet_threshold=unet_threshold,
            unet_spacing_mm=unet_spacing_mm,
            unet_tta=unet_tta,
        )
        _append(cases_file, record)
        done.append(record)
        print(f"case {n + 1}/{len(refs)} {ref.case_id}: {len(record['candidates'])} candidates")
    return _write_summary(out, done)


def replay(
    data: Path,
    cache: Path,
    out: Path,
    configs: dict[str, LocationConfig] | None = None,
    *,
    classifier: OnnxModel | None = None,
) -> dict[str, Any]:
    """Location and rules only, from the network outputs a ``run(..., cache=)`` kept.

    With ``classifier`` the cached candidates are scored again by it (the
    U-Net's candidates stay; the image is read again): how a classifier, or
    its test-time augmentation, is measured behind the same U-Net.  ``out``
    is written afresh; cases without a cache file are skipped (and said).
    InputError when the classifier runs the U-Net on another grid
    (``cmb.unet_spacing_mm``) than the one the cached candidates come from.
    """
    first = next(iter(sorted(cache.glob("*.pkl"))), None)
    if classifier is not None and first is not None:  # before an earlier result is replaced
        _check_grid(load_outputs(first).unet, classifier, first)
    out.mkdir(parents=True, exist_ok=True)
    cases_file = out / "cases.jsonl"
    cases_file.unlink(missing_ok=True)
    configs = configs or configurations()
    done: list[dict[str, Any]] = []
    for ref, cached in cached_cases(data, cache):
        if classifier is not None:
            _check_grid(cached.unet, classifier, cache / f"{ref.case_id}.pkl")
        image, _ = load_volumes(ref)
        detections = cached.detections
        if classifier is not None:
            detections = rescore(image, detections, classifier)
        record = apply_configurations(
            ref,
            detections,
            cached.labels,
            cached.parcellation,
            configs,
            image=image,
            unet=cached.unet,
            unet_threshold=cached.unet_threshold,
        )
        _append(cases_file, record)
        done.append(record)
    return _write_summary(out, done)


def _check_grid(cached_unet: str, classifier: OnnxModel, path: Path) -> None:
    """InputError unless the cached candidates come from the grid ``classifier`` runs the U-Net
    on (a cache that does not name its U-Net passes)."""
    if not cached_unet:
        return
    cached, wanted = identity_grid(cached_unet), unet_spacing(classifier)
    same = cached is None and wanted is None
    same |= cached is not None and wanted is not None and bool(np.allclose(cached, wanted))
    if not same:
        grid = "a " + " x ".join(f"{v:g}" for v in wanted) + " mm" if wanted else "its own"
        raise InputError(
            f"{path}: the cached candidates come from {cached_unet}, but classifier "
            f"{classifier.info.name} runs the U-Net on {grid} grid: cache the candidates of "
            "that grid (--unet-spacing)"
        )


def rescore(image: Volume, detections: list[Detection], classifier: OnnxModel) -> list[Detection]:
    """The cached U-Net candidates, scored by ``classifier`` (as the pipeline scores them)."""
    fresh = [
        dataclasses.replace(
            d,
            probability=d.unet_probability if d.unet_probability is not None else d.probability,
            unet_probability=None,
            status=DetectionStatus.KEPT,
            reject_reason=None,
        )
        for d in detections
    ]
    classify_candidates(image, fresh, classifier, threshold=0.0)
    return fresh


def _append(cases_file: Path, record: dict[str, Any]) -> None:
    with cases_file.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _write_summary(out: Path, cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    summary = summarise(cases)
    (out / "filter_effect.json").write_text(json.dumps(summary, indent=1))
    return summary


def write_predictions(
    cases: Sequence[dict[str, Any]], out: Path, configuration: str = "defaults"
) -> int:
    """``out/<case>/detections.json`` with ``configuration``'s rejections, for ``cmb evaluate``.

    Candidates below the run's ``min_score`` were not kept in ``cases.jsonl``,
    so an FROC from these files stops at that classifier score.  Returns the
    number of cases written.
    """
    for case in cases:
        detections = []
        for cand in case["candidates"]:
            det = dict(cand["detection"])
            reason = cand["rejected_by"][configuration]
            det["status"] = "rejected" if reason else "kept"
            det["reject_reason"] = reason
            detections.append(det)
        folder = out / case["case_id"]
        folder.mkdir(parents=True, exist_ok=True)
        payload = {
            "case_id": case["case_id"],
            "acquisition": case.get("acquisition") or {},
            "location_rules": configuration,
            "detections": detections,
        }
        (folder / "detections.json").write_text(json.dumps(payload, indent=1))
    return len(cases)


def candidate_rows(cases: Sequence[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """One row per located candidate scoring >= ``threshold``: what each rule read and decided.

    ``outcome`` is TP/FP by matching all those candidates (no rules) to the
    truth with the default rule; a TP row carries its CMB's apparent diameter,
    region and MARS category.  ``rejected_by <configuration>`` columns say
    which rule each configuration applied (empty: kept).  The table the rules'
    thresholds are tuned from (docs/location-filter.md).
    """
    rows = []
    for case in cases:
        acquisition = case.get("acquisition") or {}
        truth = parse_cmbs(case["case_id"], case["truth"])
        cands = [c for c in case["candidates"] if c["detection"]["probability"] >= threshold]
        preds = [PredCMB.from_json(c["detection"], case["case_id"]) for c in cands]
        matched = {
            p.pred_index: case["truth"][p.truth_index]
            for p in match_case(truth, preds, case_id=case["case_id"]).pairs
        }
        for n, cand in enumerate(cands):
            cmb = matched.get(n, {})
            row: dict[str, Any] = {
                "case_id": case["case_id"],
                "sequence": acquisition.get("sequence"),
                "slice_thickness_mm": acquisition.get("slice_thickness_mm"),
                "probability": cand["detection"]["probability"],
                "region": cand["detection"].get("region"),
                "outcome": "TP" if n in matched else "FP",
                "cmb_diameter_apparent_mm": cmb.get("diameter_apparent_mm"),
                "cmb_region": cmb.get("region"),
                "cmb_mars": cmb.get("mars"),
            }
            row |= {f"rejected_by {k}": v or "" for k, v in cand["rejected_by"].items()}
            row |= {f"region.{k}": v for k, v in (cand.get("region") or {}).items()}
            row |= {f"dark_structure.{k}": v for k, v in (cand.get("dark_structure") or {}).items()}
            rows.append(row)
    return rows


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """``rows`` as CSV, with the union of their keys as header (first seen first)."""
    header = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def join_shards(shards: Sequence[Path], out: Path) -> list[dict[str, Any]]:
    """The records of several ``--shard`` runs' folders, written together to ``out/cases.jsonl``
    (or of several sets' runs, to pool them: their case ids differ).

    A shard folder without records (a shard stopped before its first case) is said and
    left out.  Refuses (ValueError) a case measured by two shards, shards that hold no
    record at all, and an ``out`` that already holds records (they are never overwritten).
    """
    joined: dict[str, dict[str, Any]] = {}
    for shard in shards:
        cases = read_cases(shard / "cases.jsonl")
        if not cases:
            print(f"{shard}: no cases.jsonl records, joined without it")
        for case in cases:
            if case["case_id"] in joined:
                raise ValueError(f"{shard}: case {case['case_id']} was measured by another shard")
            joined[case["case_id"]] = case
    if not joined:
        raise ValueError("the shard folders hold no cases.jsonl records to join")
    cases_file = out / "cases.jsonl"
    if read_cases(cases_file):
        raise ValueError(f"{cases_file} already holds records: join into an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    records = [joined[k] for k in sorted(joined)]
    cases_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def read_cases(path: Path) -> list[dict[str, Any]]:
    """The whole records of a ``cases.jsonl``: a last line without its newline is the
    record a stopped run was writing, and is left out."""
    if not path.is_file():
        return []
    text = path.read_text()
    whole = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in whole.splitlines() if line.strip()]


def _drop_partial_record(cases_file: Path) -> None:
    """Cut a record a stopped run left half-written, so that appending after it resumes."""
    if not cases_file.is_file():
        return
    data = cases_file.read_bytes()
    if data and not data.endswith(b"\n"):
        with cases_file.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data", type=Path, help="validation folder (cases.jsonl); not read by --summarise"
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overlap", type=float, default=0.0, help="sliding-window overlap")
    p.add_argument("--min-score", type=float, default=0.5, help="lowest classifier score kept")
    p.add_argument("--limit", type=int, help="first N cases only")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per network")
    p.add_argument(
        "--shard",
        type=int,
        nargs=2,
        metavar=("K", "N"),
        help="every N-th case from the K-th (0-based) only: N processes share a set",
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="classifier threshold of the rule table (default: the shipped classifier's)",
    )
    p.add_argument("--summarise", action="store_true", help="tables from cases.jsonl only")
    p.add_argument(
        "--join",
        type=Path,
        nargs="+",
        metavar="SHARD_DIR",
        help="with --summarise: first join these --shard runs' (or several sets' runs') "
        "records into --out/cases.jsonl",
    )
    p.add_argument(
        "--operating-point",
        action="store_true",
        help="print the classifier threshold the export rule picks with the default rules",
    )
    p.add_argument("--cache", type=Path, help="keep each case's network outputs in this folder")
    p.add_argument(
        "--unet",
        type=Path,
        help="the U-Net whose candidates are measured (default: the shipped one; not with "
        "--replay, which keeps the cached candidates)",
    )
    p.add_argument(
        "--unet-threshold",
        type=float,
        help="U-Net probability at which candidates are extracted (default: the shipped "
        "classifier's cmb.candidate_threshold; not with --replay)",
    )
    p.add_argument(
        "--unet-spacing",
        type=float,
        nargs=3,
        metavar=("SLICE", "ROW", "COL"),
        help="grid (mm) the U-Net runs on (default: the shipped classifier's "
        "cmb.unet_spacing_mm, else the U-Net's own; not with --replay)",
    )
    p.add_argument(
        "--unet-tta",
        action="store_true",
        help="the U-Net's probability as the mean over the 8 axis flips (cmb detect --tta; "
        "not with --replay)",
    )
    p.add_argument(
        "--classifier",
        type=Path,
        help="with --replay: score the cached candidates again with this classifier file",
    )
    p.add_argument(
        "--replay",
        type=Path,
        metavar="CACHE",
        help="location and rules only, from the outputs a --cache run kept",
    )
    p.add_argument(
        "--candidates",
        type=Path,
        metavar="CSV",
        help="also write one row per candidate scoring >= --threshold: outcome, each "
        "configuration's rule, the features the rules read",
    )
    p.add_argument(
        "--predictions",
        type=Path,
        help="also write <case>/detections.json with the default rules applied (cmb evaluate)",
    )
    a = p.parse_args(argv)
    if a.classifier and not a.replay:
        p.error("--classifier rescores cached candidates: it needs --replay CACHE")
    new_candidates = a.unet or a.unet_threshold is not None or a.unet_spacing or a.unet_tta
    if new_candidates and (a.replay or a.summarise):
        p.error(
            "--unet, --unet-threshold, --unet-spacing and --unet-tta make new candidates: "
            "not with --replay or --summarise"
        )
    if a.join and not a.summarise:
        p.error("--join joins shard folders for --summarise: add --summarise")
    if a.data is None and not a.summarise:
        p.error("--data is needed to measure or replay (only --summarise reads --out alone)")
    if a.shard and not 0 <= a.shard[0] < a.shard[1]:
        p.error("--shard K N needs 0 <= K < N")
    if a.shard and (a.replay or a.summarise):
        p.error("--shard splits a run that measures the networks: not with --replay or --summarise")
    if a.summarise:
        try:
            cases = join_shards(a.join, a.out) if a.join else read_cases(a.out / "cases.jsonl")
            summary = _write_summary(a.out, cases)
        except ValueError as e:
            p.error(str(e))
    elif a.replay:
        classifier = OnnxModel.load(a.classifier, device="cpu", threads=1) if a.classifier else None
        try:
            summary = replay(a.data, a.replay, a.out, classifier=classifier)
        except InputError as e:
            p.error(str(e))
    else:
        try:
            summary = run(
                a.data,
                a.out,
                overlap=a.overlap,
                min_score=a.min_score,
                limit=a.limit,
                threads=a.threads,
                cache=a.cache,
                unet_path=a.unet,
                unet_threshold=a.unet_threshold,
                unet_spacing_mm=tuple(a.unet_spacing) if a.unet_spacing else None,
                shard=(a.shard[0], a.shard[1]) if a.shard else None,
                unet_tta=a.unet_tta,
            )
        except ValueError as e:
            p.error(str(e))
    threshold = a.threshold
    if threshold is None:
        threshold = OnnxModel.load(
            default_model_path(CLASSIFIER_TASK), device="cpu", threads=1
        ).metadata.threshold
    print(rule_table(summary, threshold))
    ceiling = summary.get("unet_candidates")
    if ceiling:
        print(
            f"U-Net candidates: {ceiling['per_scan']} per scan holding {ceiling['tp']} of "
            f"{summary['n_truth']} CMBs (recall ceiling {ceiling['recall']}, "
            f">= 3 mm {ceiling['recall_large']}); by apparent size: "
            + ", ".join(
                f"{k} {v['tp']} of {v['n']}" for k, v in ceiling["by_apparent_size"].items()
            )
        )
    if a.operating_point:
        t = operating_point(summary)
        row = summary["by_configuration"]["defaults"][f"{t:g}"]
        print(
            f"operating point with the default rules (highest recall at <= {MAX_FP_PER_SCAN} "
            f"FP/scan): classifier threshold {t:g}: {json.dumps(row)}"
        )
    if a.predictions:
        n = write_predictions(read_cases(a.out / "cases.jsonl"), a.predictions)
        print(f"wrote {n} cases to {a.predictions}")
    if a.candidates:
        rows = candidate_rows(read_cases(a.out / "cases.jsonl"), threshold)
        write_csv(rows, a.candidates)
        print(f"wrote {len(rows)} candidates scoring >= {threshold:g} to {a.candidates}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
