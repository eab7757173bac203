"""Reading predictions and truth from disk, and pairing them by case id.

Predictions (``load_predictions``): a folder with, per case, either
``<case_id>/detections.json`` (optionally with ``labels.nii.gz`` or a DICOM SEG
``seg.dcm``, and ``probability.nii.gz`` beside it) or ``<case_id>.json``; the schema is
docs/detections.schema.json.

Truth (``load_truth``), one of:

* the standardized dataset layout: a folder with ``cases.jsonl`` (one case per
  line: case_id, image, label, acquisition, cmbs[...]) and the instance label
  masks it names (paths relative to the folder);
* point annotations: one JSON file ``{case_id: [{"center_lps_mm": [x, y, z],
  "diameter_mm": d?}, ...]}`` (a case may also be ``{"cmbs": [...],
  "acquisition": {...}}``), or a folder of ``<case_id>.json`` files each holding
  such a list or object.

Pairing (``pair_cases``) is by case id; predictions written by ``cmb detect``
(folders named by StudyInstanceUID) pair through the ``study_instance_uid`` of
detections.json and of the truth record (cases.jsonl, or a point-annotation object).

NIfTI files are read with SimpleITK, whose physical frame is LPS like ours.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from evaluation.cases import (
    CasePrediction,
    CaseTruth,
    LabelMap,
    MaskSource,
    PredCMB,
    TruthCMB,
)
from evaluation.errors import EvaluationInputError, UnpairedCasesError

DETECTIONS_NAME = "detections.json"
LABELS_NAME = "labels.nii.gz"
PROBABILITY_NAME = "probability.nii.gz"
SEG_NAME = "seg.dcm"


# --- images ----------------------------------------------------------------------------------


def image_affine(img: sitk.Image) -> np.ndarray:
    """The project affine ``(k, j, i, 1) -> LPS`` of a SimpleITK image."""
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    steps = direction * spacing[None, :]  # columns: i, j, k steps
    affine = np.eye(4)
    affine[:3, 0] = steps[:, 2]
    affine[:3, 1] = steps[:, 1]
    affine[:3, 2] = steps[:, 0]
    affine[:3, 3] = np.asarray(img.GetOrigin(), dtype=np.float64)
    return affine


def to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image of ``array[k, j, i]`` with the project affine."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    steps = np.stack([affine[:3, 2], affine[:3, 1], affine[:3, 0]], axis=1)  # i, j, k
    spacing = np.linalg.norm(steps, axis=0)
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (steps / spacing[None, :]).reshape(-1)])
    img.SetOrigin([float(v) for v in affine[:3, 3]])
    return img


def read_image(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(array[k, j, i], affine) of a NIfTI (or any SimpleITK-readable) 3D image."""
    if not path.is_file():
        raise EvaluationInputError(f"{path}: no such image file")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise EvaluationInputError(f"{path}: cannot read image: {e}") from e
    if img.GetDimension() != 3:
        raise EvaluationInputError(f"{path}: expected a 3D image, got {img.GetDimension()}D")
    return sitk.GetArrayFromImage(img), image_affine(img)


def read_label_map(path: Path) -> LabelMap:
    array, affine = read_image(path)
    if np.issubdtype(array.dtype, np.floating):
        rounded = np.rint(array)
        if not np.allclose(rounded, array):
            raise EvaluationInputError(f"{path}: a label map must hold integer labels")
        array = rounded
    return LabelMap(array=array.astype(np.int32), affine=affine)


def write_label_map(label_map: LabelMap, path: Path) -> None:
    sitk.WriteImage(to_sitk(label_map.array.astype(np.int32), label_map.affine), str(path), True)


def resample_like(moving: LabelMap, reference: LabelMap) -> LabelMap:
    """``moving`` on the grid of ``reference`` (nearest neighbour, 0 outside)."""
    if moving.same_grid(reference):
        return moving
    ref = to_sitk(np.zeros(reference.array.shape, dtype=np.int32), reference.affine)
    out = sitk.Resample(
        to_sitk(moving.array.astype(np.int32), moving.affine),
        ref,
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        0,
        sitk.sitkInt32,
    )
    return LabelMap(array=sitk.GetArrayFromImage(out), affine=reference.affine)


# --- predictions -----------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise EvaluationInputError(f"{path}: cannot read JSON: {e}") from e


def read_detections(path: Path, case_id: str) -> CasePrediction:
    """One detections.json (with label/probability maps beside it when present)."""
    data = _read_json(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("detections"), list):
        raise EvaluationInputError(f"{path}: not a detections.json (no 'detections' list)")
    detections = tuple(
        PredCMB.from_json(d, f"{path}: detections[{n}]") for n, d in enumerate(data["detections"])
    )
    labels = probability = seg = None
    if path.name == DETECTIONS_NAME:
        if (path.parent / SEG_NAME).is_file():
            seg = path.parent / SEG_NAME
        if (path.parent / LABELS_NAME).is_file():
            labels = MaskSource(path=path.parent / LABELS_NAME)
        if (path.parent / PROBABILITY_NAME).is_file():
            probability = path.parent / PROBABILITY_NAME
    return CasePrediction(
        case_id=case_id,
        detections=detections,
        acquisition=dict(data.get("acquisition") or {}),
        labels=labels,
        probability_path=probability,
        seg_path=seg,
        study_instance_uid=_opt_str(data.get("study_instance_uid")),
    )


def _opt_str(value: Any) -> str | None:
    return (str(value).strip() or None) if value is not None else None


def load_predictions(pred_dir: Path | str) -> dict[str, CasePrediction]:
    """Every case of a predictions folder, by case id (see the module docstring)."""
    root = Path(pred_dir)
    if not root.is_dir():
        raise EvaluationInputError(f"{root}: predictions folder does not exist")
    found: dict[str, Path] = {}
    for child in sorted(root.iterdir()):
        if child.is_dir() and (child / DETECTIONS_NAME).is_file():
            case_id = child.name
            path = child / DETECTIONS_NAME
        elif child.is_file() and child.suffix == ".json":
            case_id, path = child.stem, child
        else:
            continue
        if case_id in found:
            raise EvaluationInputError(
                f"{root}: case {case_id} has two predictions: {found[case_id]} and {path}"
            )
        found[case_id] = path
    if not found:
        raise EvaluationInputError(
            f"{root}: no predictions found (expected <case_id>/{DETECTIONS_NAME} or <case_id>.json)"
        )
    return {cid: read_detections(path, cid) for cid, path in found.items()}


# --- truth -----------------------------------------------------------------------------------


def _truth_from_record(
    rec: Mapping[str, Any], root: Path, where: str, *, masks: bool = True
) -> CaseTruth:
    if not isinstance(rec, Mapping) or not rec.get("case_id"):
        raise EvaluationInputError(f"{where}: a case needs a 'case_id'")
    case_id = str(rec["case_id"])
    cmbs = tuple(
        TruthCMB.from_json(c, f"{where} ({case_id}).cmbs[{n}]")
        for n, c in enumerate(rec.get("cmbs") or [])
    )
    mask = None
    if masks and rec.get("label"):
        label_path = root / str(rec["label"])
        if not label_path.is_file():
            raise EvaluationInputError(f"{where} ({case_id}): label mask {label_path} is missing")
        mask = MaskSource(path=label_path)
    # the image is optional to an evaluation: a missing one only leaves local_cnr unknown
    image = root / str(rec["image"]) if masks and rec.get("image") else None
    subject = rec.get("subject")
    return CaseTruth(
        case_id=case_id,
        cmbs=cmbs,
        acquisition=dict(rec.get("acquisition") or {}),
        mask=mask,
        split=rec.get("split"),
        subject=int(subject) if subject is not None else None,
        study_instance_uid=_opt_str(rec.get("study_instance_uid")),
        image=image if image is not None and image.is_file() else None,
    )


def _truth_from_points(case_id: str, value: Any, where: str) -> CaseTruth:
    uid = None
    if isinstance(value, Mapping):
        points, acquisition = value.get("cmbs") or [], value.get("acquisition") or {}
        uid = _opt_str(value.get("study_instance_uid"))
    elif isinstance(value, list):
        points, acquisition = value, {}
    else:
        raise EvaluationInputError(f"{where}: case {case_id} must be a list of points")
    return CaseTruth.from_points(case_id, points, acquisition, study_instance_uid=uid)


def load_truth(
    truth: Path | str, split: str | None = None, *, masks: bool = True
) -> dict[str, CaseTruth]:
    """Every case of a truth folder or point-annotation file, by case id.

    ``split`` keeps only the cases of that split (standardized layout only: with point
    annotations, which record no split, it is an error).
    ``masks=False`` neither checks nor keeps the cases' label files (an
    evaluation of points alone, where the label maps may be absent).
    """
    out = _truth_cases(truth, split, masks)
    if not out:
        raise EvaluationInputError(
            f"{truth}: no truth cases" + (f" in split {split}" if split else "")
        )
    return out


def _truth_cases(truth: Path | str, split: str | None, masks: bool) -> dict[str, CaseTruth]:
    """:func:`load_truth` without its check that a case is left."""
    path = Path(truth)
    out: dict[str, CaseTruth] = {}
    if path.is_dir() and (path / "cases.jsonl").is_file():
        path = path / "cases.jsonl"
    if path.is_file() and path.suffix == ".jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvaluationInputError(f"{where}: not JSON: {e}") from e
            case = _truth_from_record(rec, path.parent, where, masks=masks)
            if split is not None and case.split != split:
                continue
            if case.case_id in out:
                raise EvaluationInputError(f"{where}: duplicate case_id {case.case_id}")
            out[case.case_id] = case
    elif split is not None:
        # point annotations record no split: keeping every case would not be what was asked
        raise EvaluationInputError(
            f"{path}: --split {split} needs a standardized layout (cases.jsonl with a split "
            "per case); point annotations have no split"
        )
    elif path.is_file() and path.suffix == ".json":
        data = _read_json(path)
        if not isinstance(data, Mapping):
            raise EvaluationInputError(f"{path}: expected an object {{case_id: [points]}}")
        out = {str(k): _truth_from_points(str(k), v, str(path)) for k, v in data.items()}
    elif path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise EvaluationInputError(
                f"{path}: no cases.jsonl and no <case_id>.json point annotations"
            )
        out = {f.stem: _truth_from_points(f.stem, _read_json(f), str(f)) for f in files}
    else:
        raise EvaluationInputError(f"{path}: truth folder or file does not exist")
    return out


def load_truths(
    truths: Sequence[Path | str], split: str | None = None, *, masks: bool = True
) -> dict[str, CaseTruth]:
    """Several truth folders or files pooled (:func:`load_truth` each); a case id in two
    of them is an error, since its predictions could not be told apart.  With ``split``
    a set may hold none of that split's cases; the pool must hold some."""
    if not truths:
        raise EvaluationInputError("no truth folder or file given")
    if len(truths) == 1:
        return load_truth(truths[0], split=split, masks=masks)
    out: dict[str, CaseTruth] = {}
    where: dict[str, Path | str] = {}
    for truth in truths:
        for case_id, case in _truth_cases(truth, split, masks).items():
            if case_id in out:
                raise EvaluationInputError(
                    f"case {case_id} is in two truth sets: {where[case_id]} and {truth}"
                )
            out[case_id], where[case_id] = case, truth
    if not out:
        names = ", ".join(str(t) for t in truths)
        raise EvaluationInputError(
            f"no truth cases in {names}" + (f" in split {split}" if split else "")
        )
    return out


def pair_cases(
    truth: Mapping[str, CaseTruth], preds: Mapping[str, CasePrediction]
) -> list[tuple[CaseTruth, CasePrediction]]:
    """(truth, prediction) per case id, sorted by id; every unpaired id is an error.

    ``cmb detect`` names its output folders by StudyInstanceUID, not by case id:
    a prediction whose id is not a truth case id is paired with the truth case
    whose ``study_instance_uid`` equals the prediction's (from detections.json,
    else its folder name), when exactly one unpaired truth case has it.
    """
    preds = _rekey_by_study_uid(truth, preds)
    missing_pred = set(truth) - set(preds)
    missing_truth = set(preds) - set(truth)
    if missing_pred or missing_truth:
        raise UnpairedCasesError(missing_pred, missing_truth)
    return [(truth[cid], preds[cid]) for cid in sorted(truth)]


def _rekey_by_study_uid(
    truth: Mapping[str, CaseTruth], preds: Mapping[str, CasePrediction]
) -> dict[str, CasePrediction]:
    """Predictions re-keyed by truth case id through the StudyInstanceUID (see pair_cases)."""
    out = dict(preds)
    by_uid: dict[str, list[str]] = {}
    for cid, t in truth.items():
        if cid not in preds and t.study_instance_uid:
            by_uid.setdefault(t.study_instance_uid, []).append(cid)
    if not by_uid:
        return out
    source: dict[str, str] = {}  # truth case id -> the prediction id paired with it
    for pid in sorted(set(preds) - set(truth)):
        p = preds[pid]
        uid = p.study_instance_uid or pid
        cids = by_uid.get(uid, [])
        if len(cids) > 1:
            raise EvaluationInputError(
                f"prediction {pid}: StudyInstanceUID {uid} belongs to several truth cases "
                f"({', '.join(sorted(cids))}); name the prediction folders by case id"
            )
        if not cids:
            continue
        cid = cids[0]
        if cid in out:
            raise EvaluationInputError(
                f"truth case {cid} (StudyInstanceUID {uid}) has two predictions: "
                f"{source.get(cid, cid)} and {pid}"
            )
        out[cid] = replace(p, case_id=cid)
        source[cid] = pid
        del out[pid]
    return out
