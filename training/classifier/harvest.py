"""Harvest the U-Net's candidates of a dataset as labelled patches for the classifier.

For each case the product's own path runs (``predict_probability`` on the
ONNX U-Net, ``extract_candidates`` at a low threshold); each candidate is
labelled by the evaluation package's matching rule (a microbleed when it
matches a true CMB, else a false positive: the veins, calcifications and
artefacts the classifier must learn to reject).  True CMBs the U-Net missed
are added as positives centred on the truth, so the classifier also learns
the faint ones.  Patches are cut by ``model.candidate_classifier.extract_patches``
on the U-Net's plan (spacing, normalization), the grid the runtime uses;
with ``spacing_mm`` the U-Net runs, and the patches are cut, on that grid
instead (the cascade's ``cmb.unet_spacing_mm``); with ``cube_spacing_mm`` the
patches are cut on a grid of their own (a classifier with 1 mm cubes behind
a U-Net run on 0.7 mm, say).  Each file records both grids (``spacing_mm``:
the cubes', ``unet_spacing_mm``: the U-Net's) so that training and export
know them.  The cubes never take the U-Net's input filter (``cmb.input_filter``);
with ``cube_filter`` they take one of their own, which the exported classifier
declares, so that the product filters its cubes the same way (recorded as
``input_filter``, JSON).  With ``extra_channels`` each row holds, beside that
cube, one cube per listed filter (None: the image as acquired), cut at the
same centre from the image prepared with that filter: ``patches`` is then
``[N, C, S, S, S]`` and ``extra_channels`` (JSON) records the list, which the
exported classifier declares (``cmb.extra_channels``).

One ``<case_id>.npz`` per case (float16 patches, labels, U-Net maxima, LPS
centres, whether a row is a candidate or an added truth, the size of the CMB
a positive row is): a case already
harvested is skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.cases import PredCMB, TruthCMB, parse_cmbs
from evaluation.matching import MatchRule, match_case
from model.candidate_classifier import extract_channel_patches
from model.candidates import extract_candidates
from model.infer import predict_probability
from model.onnx_model import OnnxModel
from model.preprocess import prepare, validate_input_filter
from training.data import CaseRef, list_cases, load_volumes

log = logging.getLogger(__name__)

#: Harvested cube edge (voxels): larger than the classifier's input so training can shift it
#: (a 24-voxel input shifted by up to 3 voxels needs 30; ``--cube-size`` for larger inputs).
HARVEST_SIZE = 32


def harvest_case(
    ref: CaseRef,
    unet: OnnxModel,
    *,
    candidate_threshold: float,
    overlap: float = 0.0,
    rule: MatchRule | None = None,
    size: int = HARVEST_SIZE,
    spacing_mm: tuple[float, float, float] | None = None,
    cube_spacing_mm: tuple[float, float, float] | None = None,
    cube_filter: dict[str, Any] | None = None,
    extra_channels: Sequence[dict[str, Any] | None] = (),
) -> dict[str, np.ndarray]:
    """The labelled candidate patches of one case (arrays of one ``.npz``).

    ``spacing_mm``: the grid the U-Net runs on (None: its own); ``cube_spacing_mm``:
    the grid the cubes are cut on (None: the U-Net's grid).  The cubes take the
    U-Net's normalization but never its input filter: they take ``cube_filter``
    (None: the image as acquired), the filter the exported classifier declares;
    ``extra_channels``: one more cube per filter listed, as further channels.
    """
    unet_plan = unet.metadata.on_grid(spacing_mm)
    cube_plans = unet_plan.on_grid(cube_spacing_mm).with_input_filters(
        [cube_filter, *extra_channels]
    )
    image, _ = load_volumes(ref)
    probability = predict_probability(image, unet, overlap=overlap, spacing_mm=unet_plan.spacing_mm)
    _, detections = extract_candidates(probability, candidate_threshold)
    truth = parse_cmbs(ref.case_id, ref.record.get("cmbs"))
    preds = [PredCMB.from_detection(d) for d in detections]
    match = match_case(truth, preds, rule or MatchRule(), case_id=ref.case_id)
    by_pred = match.truth_for_pred()
    found = set(match.pred_for_truth())
    centres = [d.center_lps_mm for d in detections]
    label = [int(n in by_pred) for n in range(len(detections))]
    truth_index = [by_pred[n].truth_index if n in by_pred else -1 for n in range(len(detections))]
    unet_prob = [d.probability for d in detections]
    added = [n for n in range(len(truth)) if n not in found]
    centres += [truth[n].center_lps_mm for n in added]
    label += [1] * len(added)
    truth_index += added
    unet_prob += [float("nan")] * len(added)
    patches = extract_channel_patches(
        [prepare(image, plan) for plan in cube_plans],
        np.asarray(centres).reshape(-1, 3),
        (size,) * 3,
    )
    return {
        # one channel keeps the layout of every harvest before channels: [N, S, S, S]
        "patches": (patches if extra_channels else patches[:, 0]).astype(np.float16),
        "label": np.asarray(label, dtype=np.uint8),
        "truth_index": np.asarray(truth_index, dtype=np.int32),
        # the size the size bins and the large-CMB floor read (apparent, else true; NaN:
        # not a CMB, or a truth without a size), for ``train --small-weight``
        "truth_diameter_mm": np.asarray(
            [_diameter(truth[i]) if i >= 0 else np.nan for i in truth_index], dtype=np.float32
        ),
        "unet_probability": np.asarray(unet_prob, dtype=np.float32),
        "is_candidate": np.asarray([True] * len(detections) + [False] * len(added)),
        "center_lps_mm": np.asarray(centres, dtype=np.float64).reshape(-1, 3),
        "n_truth": np.asarray(len(truth)),
        "spacing_mm": np.asarray(cube_plans[0].spacing_mm, dtype=np.float64),
        "unet_spacing_mm": np.asarray(unet_plan.spacing_mm, dtype=np.float64),
        **(
            {"input_filter": np.asarray(json.dumps(cube_filter, sort_keys=True))}
            if cube_filter
            else {}
        ),
        **(
            {"extra_channels": np.asarray(json.dumps(list(extra_channels), sort_keys=True))}
            if extra_channels
            else {}
        ),
    }


def _diameter(cmb: TruthCMB) -> float:
    size = cmb.match_diameter_mm
    return float(size) if size is not None else float("nan")


_UNET: OnnxModel | None = None


def _init(model_path: str, threads: int) -> None:
    global _UNET
    _UNET = OnnxModel.load(model_path, device="cpu", threads=threads)


def _one(
    ref: CaseRef,
    out: str,
    candidate_threshold: float,
    overlap: float,
    spacing_mm: tuple[float, float, float] | None,
    cube_spacing_mm: tuple[float, float, float] | None,
    size: int,
    cube_filter: dict[str, Any] | None,
    extra_channels: Sequence[dict[str, Any] | None],
) -> str:
    if _UNET is None:
        raise RuntimeError("harvest worker used before its model was loaded")
    arrays = harvest_case(
        ref,
        _UNET,
        candidate_threshold=candidate_threshold,
        overlap=overlap,
        spacing_mm=spacing_mm,
        cube_spacing_mm=cube_spacing_mm,
        size=size,
        cube_filter=cube_filter,
        extra_channels=extra_channels,
    )
    final = Path(out) / f"{ref.case_id}.npz"
    tmp = final.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, final)
    return ref.case_id


def harvest(
    data: list[Path],
    unet_path: Path,
    out: Path,
    *,
    candidate_threshold: float = 0.3,
    overlap: float = 0.0,
    workers: int = 1,
    limit: int | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
    cube_spacing_mm: tuple[float, float, float] | None = None,
    size: int = HARVEST_SIZE,
    cube_filter: dict[str, Any] | None = None,
    extra_channels: Sequence[dict[str, Any] | None] = (),
) -> int:
    """Harvest every case of ``data`` not yet in ``out``; returns how many were written.

    ``spacing_mm``: the grid the U-Net runs on (None: the U-Net's own);
    ``cube_spacing_mm``: the grid the patches are cut on (None: the U-Net's
    grid); ``size``: the cubes' edge in voxels; ``cube_filter``: the cubes' input
    filter (``model.preprocess.INPUT_FILTERS``; None: none); ``extra_channels``: the
    filters of further channels (None in the list: the image as acquired).  The cases
    already in ``out`` must have been harvested on the same grids, size, filter and
    channels (:class:`training.classifier.train.Pool` refuses a mix).
    """
    if size < 8:
        raise ValueError(f"the harvested cubes need an edge of at least 8 voxels, got {size}")
    for spec in (cube_filter, *extra_channels):
        if spec is not None:
            validate_input_filter(spec)
    out.mkdir(parents=True, exist_ok=True)
    refs = [r for r in list_cases(data) if not (out / f"{r.case_id}.npz").is_file()]
    refs = refs[:limit] if limit is not None else refs
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=max(1, workers), mp_context=ctx, initializer=_init, initargs=(str(unet_path), 1)
    ) as pool:
        jobs = [
            pool.submit(
                _one,
                r,
                str(out),
                candidate_threshold,
                overlap,
                spacing_mm,
                cube_spacing_mm,
                size,
                cube_filter,
                list(extra_channels),
            )
            for r in refs
        ]
        try:
            for n, job in enumerate(jobs, 1):
                log.info("harvested %s (%d/%d)", job.result(), n, len(jobs))
        except BaseException:
            # a failed case or Ctrl-C / SIGINT: leaving the pool would otherwise run every
            # queued case first (minutes each); only the cases already started finish
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return len(refs)
