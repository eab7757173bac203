"""Why the U-Net's candidates miss true microbleeds, and whether a second candidate source helps.

The cascade's recall ceiling is the share of true CMBs among the U-Net's
candidates (``filter_effect``'s ``unet_candidates``).  For each true CMB of a
validation folder this tool records, from the outputs a ``filter_effect
--cache`` run kept and the U-Net's probability map computed again:

* whether a candidate matches it (the evaluation package's default rule);
* the U-Net's highest probability within ``diameter_apparent / 2 + margin`` mm
  of its centre (``peak``): a peak near 0 means the network sees nothing
  there, a peak above the candidate threshold with no match means the
  component is there but its centre lies too far (merged with a neighbour);
* the candidate component in that ball, if any, and how far its centre is.

With ``--blob-threshold T`` it also tries a hand-made second source: dark
blobs of the classifier's normalized 1 mm image (scale-normalized Laplacian of
Gaussian, the classic blob detector; maxima above ``T`` inside the cached
parcellation's brain), dropping those inside or within ``--blob-dedupe-mm`` of
a U-Net candidate.  The blobs are scored by the classifier as the product
scores candidates (one view first; those >= ``PRESCREEN`` again with the
file's test-time augmentation), and each true CMB gets the best score of a
blob within the match radius.  No product code uses it: it answers whether
such a source raises the ceiling for fewer false positives than it adds.

    python -m training.candidate_misses --data runs/data/select \\
        --cache runs/fc_base/select --out runs/misses/select.jsonl --blob-threshold 0.5
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from evaluation.cases import PredCMB, parse_cmbs
from evaluation.matching import MatchRule, match_case
from evaluation.stratify import SCAN_STRATA, stratum_sort_key
from model.candidate_classifier import TASK as CLASSIFIER_TASK
from model.candidate_classifier import (
    extract_channel_patches,
    prepare_channels,
    score_patches,
    unet_identity,
)
from model.infer import predict_probability
from model.onnx_model import OnnxModel, default_model_path
from model.preprocess import resample_like
from model.types import Detection, Volume
from training.data import list_cases, load_volumes
from training.parcellation.filter_effect import cached_cases

#: Scale-space of the blob detector, in voxels of the 1 mm grid (a 3D blob of
#: radius r answers most at sigma = r / sqrt(3): 1.4 to 4.3 mm across).
SIGMAS = (0.8, 1.2, 1.8, 2.5)
#: One-view classifier score from which a blob is scored again with the file's views.
PRESCREEN = 0.3
#: Classifier thresholds of the blob table.
BLOB_THRESHOLDS = (0.5, 0.8, 0.86, 0.9, 0.95, 0.98)
SIZE_BINS = ((0.0, 2.0), (2.0, 3.0), (3.0, 5.0), (5.0, float("inf")))
#: Apparent diameter from which a CMB counts as large (the evaluation's >= 3 mm stratum).
LARGE_MM = 3.0


def by_acquisition(
    cases: Sequence[dict[str, Any]], acquisitions: dict[str, dict[str, Any]]
) -> dict[str, dict[str, dict[str, int]]]:
    """The large CMBs (>= ``LARGE_MM``) and how many are among the candidates, per value of
    each scan stratum of the evaluation package (:data:`evaluation.stratify.SCAN_STRATA`,
    binned as its reports bin them): where the ceiling is lost.  Cases without a recorded
    acquisition are not counted; a stratum no case records is left out."""
    table: dict[str, dict[str, dict[str, int]]] = {}
    for case in cases:
        acq = acquisitions.get(case["case_id"])
        if not acq:
            continue
        large = [c for c in case["cmbs"] if float(c["diameter_apparent_mm"] or 0.0) >= LARGE_MM]
        for name, key in SCAN_STRATA.items():
            value = key(acq)
            if value is None:
                continue
            cell = table.setdefault(name, {}).setdefault(value, {"n": 0, "among_candidates": 0})
            cell["n"] += len(large)
            cell["among_candidates"] += sum(bool(c["matched"]) for c in large)
    return {
        name: {v: values[v] for v in sorted(values, key=stratum_sort_key) if values[v]["n"]}
        for name, values in table.items()
        if any(cell["n"] for cell in values.values())
    }


def _ball(volume: Volume, centre: Sequence[float], radius_mm: float) -> tuple[Any, Any]:
    """(index box, boolean mask of the voxels within ``radius_mm``) around an LPS point."""
    shape = np.asarray(volume.array.shape)
    ijk = volume.lps_to_index(np.asarray(centre, dtype=np.float64)[None])[0]
    steps = np.linalg.norm(volume.affine[:3, :3], axis=0)
    reach = np.ceil(radius_mm / steps) + 1
    lo = np.clip(np.floor(ijk - reach).astype(int), 0, shape)
    hi = np.clip(np.ceil(ijk + reach + 1).astype(int), 0, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    axes = [np.arange(a, b) for a, b in zip(lo, hi, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    lps = volume.index_to_lps(grid.reshape(-1, 3).astype(np.float64))
    dist = np.linalg.norm(lps - np.asarray(centre), axis=1).reshape(grid.shape[:3])
    return box, dist <= radius_mm


def peak_near(probability: Volume, centre: Sequence[float], radius_mm: float) -> float:
    """The highest probability within ``radius_mm`` of ``centre`` (0 outside the volume)."""
    box, inside = _ball(probability, centre, radius_mm)
    values = np.asarray(probability.array)[box][inside]
    return float(values.max()) if values.size else 0.0


def component_near(labels: Volume, centre: Sequence[float], radius_mm: float) -> int:
    """The largest candidate id within ``radius_mm`` of ``centre`` (0: none)."""
    box, inside = _ball(labels, centre, radius_mm)
    values = np.asarray(labels.array)[box][inside]
    return int(values.max()) if values.size else 0


def miss_records(
    case_id: str,
    truth: Sequence[dict[str, Any]],
    detections: Sequence[Detection],
    labels: Volume,
    probability: Volume,
    *,
    margin_mm: float = 1.5,
) -> list[dict[str, Any]]:
    """One record per true CMB: matched by a candidate or not, peak, nearby component."""
    cmbs = parse_cmbs(case_id, list(truth))
    preds = [
        PredCMB.from_json(d.to_json(), f"{case_id} candidate {i}") for i, d in enumerate(detections)
    ]
    found = match_case(cmbs, preds, case_id=case_id).pred_for_truth()
    by_id = {d.id: d for d in detections}
    records = []
    for i, cmb in enumerate(truth):
        centre = cmb["center_lps_mm"]
        radius = float(cmb.get("diameter_apparent_mm") or 0.0) / 2.0 + margin_mm
        comp = component_near(labels, centre, radius)
        comp_dist = None
        if comp in by_id:
            comp_dist = float(np.linalg.norm(np.subtract(by_id[comp].center_lps_mm, centre)))
        records.append(
            {
                "index": i,
                "diameter_apparent_mm": cmb.get("diameter_apparent_mm"),
                "mars": cmb.get("mars"),
                "region": cmb.get("region"),
                "matched": i in found,
                "peak": round(peak_near(probability, centre, radius), 4),
                "component": comp,
                "component_distance_mm": comp_dist,
            }
        )
    return records


def dark_blobs(
    prepared: Volume,
    mask: npt.NDArray[np.bool_],
    *,
    threshold: float,
    sigmas: Sequence[float] = SIGMAS,
    min_distance: int = 2,
) -> list[tuple[tuple[float, float, float], float, float]]:
    """Dark blobs of a normalized image: (centre LPS, sigma in voxels, response), strongest first.

    The response is the scale-normalized Laplacian of Gaussian (sigma^2 times
    the Laplacian: positive at the centre of a dark blob), its maximum over
    ``sigmas``; a blob is a local maximum over a cube of ``2 min_distance + 1``
    voxels, above ``threshold`` and inside ``mask``.
    """
    array = np.asarray(prepared.array, dtype=np.float32)
    stack = np.stack([s * s * ndi.gaussian_laplace(array, s) for s in sigmas])
    response, scale = stack.max(axis=0), stack.argmax(axis=0)
    peaks = response == ndi.maximum_filter(response, size=2 * min_distance + 1)
    index = np.argwhere(peaks & mask & (response > threshold))
    values = response[tuple(index.T)]
    order = np.argsort(-values, kind="stable")
    index, values = index[order], values[order]
    centres = prepared.index_to_lps(index.astype(np.float64))
    return [
        (
            (float(c[0]), float(c[1]), float(c[2])),
            float(sigmas[int(scale[tuple(i)])]),
            float(v),
        )
        for c, i, v in zip(centres, index, values, strict=True)
    ]


def blob_candidates(
    image: Volume,
    classifier: OnnxModel,
    parcellation: Volume,
    labels: Volume,
    detections: Sequence[Detection],
    *,
    threshold: float,
    dedupe_mm: float,
) -> list[Detection]:
    """Dark blobs in the brain that no U-Net candidate covers, scored as the product scores."""
    channels = prepare_channels(image, classifier.metadata)
    prepared = channels[0]
    brain = np.asarray(resample_like(parcellation, prepared, order=0).array) > 0
    unet_labels = np.asarray(resample_like(labels, prepared, order=0).array)
    unet_centres = np.array([d.center_lps_mm for d in detections], dtype=np.float64)
    blobs: list[Detection] = []
    for centre, sigma, _ in dark_blobs(prepared, brain, threshold=threshold):
        ijk = tuple(np.rint(prepared.lps_to_index(np.asarray(centre)[None])[0]).astype(int))
        if unet_labels[ijk] > 0:
            continue
        if len(unet_centres) and np.linalg.norm(unet_centres - centre, axis=1).min() < dedupe_mm:
            continue
        diameter = 2.0 * np.sqrt(3.0) * sigma * float(np.mean(prepared.spacing))
        blobs.append(
            Detection(
                id=len(blobs) + 1,
                center_lps_mm=centre,
                diameter_mm=float(diameter),
                volume_mm3=float(np.pi * diameter**3 / 6.0),
                probability=0.0,
            )
        )
    # scored on the images prepared above, as classify_candidates scores (it would prepare
    # them again for each of the two passes)
    patches = extract_channel_patches(
        channels, [b.center_lps_mm for b in blobs], classifier.metadata.patch_size
    )
    scores = score_patches(classifier, patches, tta=False)
    again = np.flatnonzero(scores >= PRESCREEN)
    scores[again] = score_patches(classifier, patches[again])
    for blob, score in zip(blobs, np.clip(scores, 0.0, 1.0), strict=True):
        blob.probability = float(score)
    return blobs


def blob_record(
    truth: Sequence[dict[str, Any]], blobs: Sequence[Detection], radius_mm: float
) -> dict[str, Any]:
    """Per true CMB the best blob score within ``radius_mm``; the scores of the other blobs."""
    centres = np.array([b.center_lps_mm for b in blobs], dtype=np.float64).reshape(-1, 3)
    scores = np.array([b.probability for b in blobs], dtype=np.float64)
    near_any = np.zeros(len(blobs), dtype=bool)
    best: list[float | None] = []
    for cmb in truth:
        near = np.linalg.norm(centres - np.asarray(cmb["center_lps_mm"]), axis=1) <= radius_mm
        near_any |= near
        best.append(float(scores[near].max()) if near.any() else None)
    negatives = np.sort(scores[~near_any])[::-1]
    return {
        "n": len(blobs),
        "truth_best": best,
        "negative_scores": [round(float(s), 4) for s in negatives if s >= min(BLOB_THRESHOLDS)],
    }


def summarise(
    cases: Sequence[dict[str, Any]], acquisitions: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Totals per apparent-size bin, the large CMBs per acquisition parameter when
    ``acquisitions`` (case id -> the case's ``acquisition``) is given, and the blob table
    when blobs were scored."""
    cmbs = [c for case in cases for c in case["cmbs"]]
    bins = []
    for lo, hi in SIZE_BINS:
        inbin = [c for c in cmbs if lo <= float(c["diameter_apparent_mm"] or 0.0) < hi]
        missed = [c for c in inbin if not c["matched"]]
        bins.append(
            {
                "size_mm": f"{lo:g}-{hi:g}",
                "n": len(inbin),
                "matched": len(inbin) - len(missed),
                "missed_peak_below_0.05": sum(c["peak"] < 0.05 for c in missed),
                "missed_peak_0.05_to_threshold": sum(
                    c["peak"] >= 0.05 and not c["component"] for c in missed
                ),
                "missed_in_a_component": sum(bool(c["component"]) for c in missed),
            }
        )
    summary: dict[str, Any] = {"n_scans": len(cases), "n_cmbs": len(cmbs), "by_size": bins}
    if acquisitions:
        summary["large_by_acquisition"] = by_acquisition(cases, acquisitions)
    scored = [case for case in cases if "blobs" in case]
    if scored:
        rows = []
        for t in BLOB_THRESHOLDS:
            new_tp = sum(
                1
                for case in scored
                for c, best in zip(case["cmbs"], case["blobs"]["truth_best"], strict=True)
                if not c["matched"] and best is not None and best >= t
            )
            fp = sum(s >= t for case in scored for s in case["blobs"]["negative_scores"])
            rows.append({"threshold": t, "cmbs_added": new_tp, "false_candidates": fp})
        missed = [
            best
            for case in scored
            for c, best in zip(case["cmbs"], case["blobs"]["truth_best"], strict=True)
            if not c["matched"]
        ]
        summary["blobs"] = {
            "per_scan": round(sum(case["blobs"]["n"] for case in scored) / len(scored), 1),
            "missed_cmbs": len(missed),
            "missed_cmbs_with_a_blob": sum(b is not None for b in missed),
            "by_threshold": rows,
        }
    return summary


def run(
    data: Path,
    cache: Path,
    out: Path,
    *,
    unet_path: Path | None,
    overlap: float,
    blob_threshold: float | None,
    blob_dedupe_mm: float,
    unet_spacing_mm: tuple[float, float, float] | None = None,
) -> dict[str, Any]:
    """One line per case to ``out`` (jsonl, written afresh); returns :func:`summarise`.

    ``unet_spacing_mm``: the grid the cache's U-Net ran on (``filter_effect
    --unet-spacing``; None: its own); the cache must say the same.
    """
    unet = OnnxModel.load(unet_path or default_model_path("cmb_segmentation"), device="cpu")
    classifier = (  # scores the blobs only
        OnnxModel.load(default_model_path(CLASSIFIER_TASK), device="cpu")
        if blob_threshold is not None
        else None
    )
    radius = MatchRule().radius_mm
    out.parent.mkdir(parents=True, exist_ok=True)
    cases = []
    acquisitions: dict[str, dict[str, Any]] = {}
    with out.open("w") as f:
        for ref, cached in cached_cases(data, cache):
            if cached.unet and cached.unet != unet_identity(unet, unet_spacing_mm):
                raise SystemExit(
                    f"{cache}: {ref.case_id} holds candidates of {cached.unet}, not of "
                    f"{unet_identity(unet, unet_spacing_mm)} (--unet, --unet-spacing)"
                )
            image, _ = load_volumes(ref)
            probability = predict_probability(
                image, unet, overlap=overlap, spacing_mm=unet_spacing_mm
            )
            truth = ref.record.get("cmbs") or []
            acquisitions[ref.case_id] = ref.record.get("acquisition") or {}
            record: dict[str, Any] = {
                "case_id": ref.case_id,
                "n_candidates": len(cached.detections),
                "cmbs": miss_records(
                    ref.case_id, truth, cached.detections, cached.labels, probability
                ),
            }
            if classifier is not None and blob_threshold is not None:
                blobs = blob_candidates(
                    image,
                    classifier,
                    cached.parcellation,
                    cached.labels,
                    cached.detections,
                    threshold=blob_threshold,
                    dedupe_mm=blob_dedupe_mm,
                )
                record["blobs"] = blob_record(truth, blobs, radius)
            f.write(json.dumps(record) + "\n")
            f.flush()
            cases.append(record)
            missed = sum(not c["matched"] for c in record["cmbs"])
            print(f"{ref.case_id}: {len(truth)} CMBs, {missed} not among the candidates")
    return summarise(cases, acquisitions)


def summarise_file(data: Path, out: Path) -> dict[str, Any]:
    """:func:`summarise` of a finished ``out`` (no network runs), with ``data``'s acquisitions."""
    cases = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    acquisitions = {ref.case_id: ref.record.get("acquisition") or {} for ref in list_cases([data])}
    return summarise(cases, acquisitions)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.candidate_misses", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="validation folder (cases.jsonl)")
    p.add_argument("--cache", type=Path, help="a filter_effect --cache folder")
    p.add_argument("--out", type=Path, required=True, help="per-case records (jsonl)")
    p.add_argument("--unet", type=Path, help="the U-Net the cache was made with (default: shipped)")
    p.add_argument("--overlap", type=float, default=0.0, help="sliding-window overlap")
    p.add_argument(
        "--unet-spacing",
        type=float,
        nargs=3,
        metavar=("SLICE", "ROW", "COL"),
        help="the grid (mm) the cache's U-Net ran on (default: its own)",
    )
    p.add_argument("--blob-threshold", type=float, help="also try dark-blob candidates above this")
    p.add_argument("--blob-dedupe-mm", type=float, default=4.0)
    p.add_argument(
        "--summarise",
        action="store_true",
        help="recompute the summary of a finished --out without running the networks",
    )
    a = p.parse_args(argv)
    if a.summarise:
        summary = summarise_file(a.data, a.out)
        a.out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
        return 0
    if a.cache is None:
        p.error("--cache is required (unless --summarise)")
    summary = run(
        a.data,
        a.cache,
        a.out,
        unet_path=a.unet,
        overlap=a.overlap,
        blob_threshold=a.blob_threshold,
        blob_dedupe_mm=a.blob_dedupe_mm,
        unet_spacing_mm=tuple(a.unet_spacing) if a.unet_spacing else None,
    )
    a.out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
