"""What the evaluation compares: true CMBs and predicted CMBs of one case.

These are plain, validated records, independent of how they were read (files on
disk or objects in memory during training).  Geometry is in DICOM patient LPS
millimetres, as everywhere in the project (see ``model.types``).

A *case* is one scan (one series).  Masks are optional: a ``LabelMap`` is an
instance label volume (0 background, n = the instance id) with the project's
``(k, j, i) -> LPS`` affine; it may be given as an array or as a NIfTI path that
is read only when a metric needs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from evaluation.errors import EvaluationInputError

Point = tuple[float, float, float]


def _point(value: Any, what: str) -> Point:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise EvaluationInputError(f"{what}: not a 3D point: {value!r}") from e
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise EvaluationInputError(f"{what}: not a finite 3D point: {value!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def _opt_float(value: Any, what: str) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError) as e:
        raise EvaluationInputError(f"{what}: not a number: {value!r}") from e
    if not np.isfinite(out) or out < 0:
        raise EvaluationInputError(f"{what}: must be a finite non-negative number, got {value!r}")
    return out


@dataclass(frozen=True)
class LabelMap:
    """An instance label volume on a grid: ``array[k, j, i]``, affine ``(k, j, i, 1) -> LPS``."""

    array: npt.NDArray[np.integer[Any]]
    affine: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise EvaluationInputError(f"label map must be 3D, got shape {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise EvaluationInputError(f"label map affine must be 4x4, got {self.affine.shape}")

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def index_to_lps(self, index: npt.ArrayLike) -> npt.NDArray[np.float64]:
        idx = np.asarray(index, dtype=np.float64)
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def same_grid(self, other: LabelMap, tol_mm: float = 1e-3) -> bool:
        return self.array.shape == other.array.shape and bool(
            np.allclose(self.affine, other.affine, atol=tol_mm)
        )


@dataclass(frozen=True)
class MaskSource:
    """A label map given in memory or as a file, read on first use (``evaluation.io``)."""

    path: Path | None = None
    label_map: LabelMap | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.label_map is None):
            raise EvaluationInputError("a MaskSource needs exactly one of path or label_map")

    def load(self) -> LabelMap:
        if self.label_map is not None:
            return self.label_map
        from evaluation.io import read_label_map

        if self.path is None:  # unreachable: __post_init__ requires one of the two
            raise EvaluationInputError("a MaskSource without path or label_map")
        return read_label_map(self.path)


@dataclass(frozen=True)
class TruthCMB:
    """One reference microbleed."""

    center_lps_mm: Point
    label: int | None = None  # instance id in the truth label map, if there is one
    diameter_mm: float | None = None  # the size used for size bins (true diameter if known)
    diameter_apparent_mm: float | None = None
    region: str | None = None
    mars: str | None = None
    lobe: str | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str) -> TruthCMB:
        if "center_lps_mm" not in obj:
            raise EvaluationInputError(f"{where}: a CMB without center_lps_mm")
        label = obj.get("label")
        diameter = obj.get("diameter_true_mm", obj.get("diameter_mm"))
        return cls(
            center_lps_mm=_point(obj["center_lps_mm"], f"{where}.center_lps_mm"),
            label=int(label) if label is not None else None,
            diameter_mm=_opt_float(diameter, f"{where}.diameter_mm"),
            diameter_apparent_mm=_opt_float(
                obj.get("diameter_apparent_mm"), f"{where}.diameter_apparent_mm"
            ),
            region=obj.get("region"),
            mars=obj.get("mars"),
            lobe=obj.get("lobe"),
        )

    @property
    def match_diameter_mm(self) -> float | None:
        """The size the size-aware rule uses: what a reader sees (apparent), else the true size."""
        return self.diameter_apparent_mm if self.diameter_apparent_mm else self.diameter_mm


def parse_cmbs(case_id: str, points: Iterable[Mapping[str, Any]] | None) -> tuple[TruthCMB, ...]:
    """A case's reference CMBs (``cases.jsonl``'s ``cmbs``); an error names the case and index."""
    return tuple(TruthCMB.from_json(p, f"{case_id}.cmbs[{n}]") for n, p in enumerate(points or ()))


@dataclass(frozen=True)
class PredCMB:
    """One predicted microbleed (a detection of detections.json)."""

    id: int
    center_lps_mm: Point
    probability: float
    diameter_mm: float | None = None
    volume_mm3: float | None = None
    kept: bool = True
    reject_reason: str | None = None
    region: str | None = None
    mars: str | None = None
    lobe: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise EvaluationInputError(
                f"prediction {self.id}: probability must be in [0, 1], got {self.probability}"
            )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str) -> PredCMB:
        for key in ("id", "center_lps_mm", "probability"):
            if key not in obj:
                raise EvaluationInputError(f"{where}: a detection without {key!r}")
        status = obj.get("status", "kept")
        if status not in ("kept", "rejected"):
            raise EvaluationInputError(f"{where}: unknown status {status!r}")
        return cls(
            id=int(obj["id"]),
            center_lps_mm=_point(obj["center_lps_mm"], f"{where}.center_lps_mm"),
            probability=float(obj["probability"]),
            diameter_mm=_opt_float(obj.get("diameter_mm"), f"{where}.diameter_mm"),
            volume_mm3=_opt_float(obj.get("volume_mm3"), f"{where}.volume_mm3"),
            kept=status == "kept",
            reject_reason=obj.get("reject_reason"),
            region=obj.get("region"),
            mars=obj.get("mars"),
            lobe=obj.get("lobe"),
        )

    @classmethod
    def from_detection(cls, det: Any) -> PredCMB:
        """From a ``model.types.Detection`` (in-memory use by training and tests)."""
        return cls.from_json(det.to_json(), f"detection {det.id}")


@dataclass(frozen=True)
class CaseTruth:
    """The reference of one case: its CMBs, acquisition metadata and optional label map."""

    case_id: str
    cmbs: tuple[TruthCMB, ...]
    acquisition: Mapping[str, Any] = field(default_factory=dict)
    mask: MaskSource | None = None
    split: str | None = None
    subject: int | None = None
    # the image the truth was drawn on (standardized layout): the local_cnr stratum reads it
    image: Path | None = None
    # the StudyInstanceUID of the case's DICOM, when known: pairs predictions from `cmb detect`
    study_instance_uid: str | None = None

    @classmethod
    def from_points(
        cls,
        case_id: str,
        points: Iterable[Mapping[str, Any]],
        acquisition: Mapping[str, Any] | None = None,
        study_instance_uid: str | None = None,
    ) -> CaseTruth:
        return cls(
            case_id=case_id,
            cmbs=parse_cmbs(case_id, points),
            acquisition=dict(acquisition or {}),
            study_instance_uid=study_instance_uid,
        )


@dataclass(frozen=True)
class CasePrediction:
    """The predictions of one case: every detection (kept and rejected) and optional masks."""

    case_id: str
    detections: tuple[PredCMB, ...]
    acquisition: Mapping[str, Any] = field(default_factory=dict)
    labels: MaskSource | None = None  # instance labels, n = detection id
    probability_path: Path | None = None
    seg_path: Path | None = None  # DICOM SEG, read when there is no labels map
    study_instance_uid: str | None = None  # from detections.json

    def __post_init__(self) -> None:
        ids = [d.id for d in self.detections]
        if len(ids) != len(set(ids)):
            raise EvaluationInputError(f"case {self.case_id}: duplicate detection ids {ids}")

    def predictions(
        self, threshold: float | None = None, include_rejected: bool = False
    ) -> tuple[PredCMB, ...]:
        """The detections that count as predictions: kept ones (and rejected ones if asked),
        with probability >= threshold when a threshold is given."""
        out = [d for d in self.detections if d.kept or include_rejected]
        if threshold is not None:
            out = [d for d in out if d.probability >= threshold]
        return tuple(out)

    @classmethod
    def from_detections(
        cls, case_id: str, detections: Iterable[Any], labels: LabelMap | None = None
    ) -> CasePrediction:
        """From ``model.types.Detection`` objects and an optional label map (training)."""
        return cls(
            case_id=case_id,
            detections=tuple(PredCMB.from_detection(d) for d in detections),
            labels=MaskSource(label_map=labels) if labels is not None else None,
        )
