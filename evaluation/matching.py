"""One-to-one matching of predicted to true CMBs (Hungarian assignment).

Every rule answers two questions for each (truth, prediction) pair: *may* they
match (feasibility), and how good is the match (cost).  The assignment
(``scipy.optimize.linear_sum_assignment``) first maximises the number of
feasible pairs, then minimises their total cost; infeasible pairs of the
assignment are dropped.  So each true CMB is matched at most once, and a second
prediction near an already matched CMB is a false positive.

Rules (``MatchRule.parse`` spellings in brackets; docs/evaluation.md has the why):

* ``center`` [``center``, ``center:R``]: centre distance <= R mm (default 5).
* ``size-aware`` [``size-aware``, ``size-aware:F``]: centre distance <=
  max(min_radius_mm, F * (d_true + d_pred) / 2): the two spheres (scaled by F,
  default 1) touch; a missing diameter counts as 0, hence the floor
  (default 1.5 mm).
* ``overlap`` [``overlap``, ``overlap:T``]: the instance masks share at least one
  voxel and their IoU is >= T (default 0); cost 1 - IoU.  Needs both label maps
  on one grid.
* ``valdo`` [``valdo``, ``valdo:R``]: the VALDO 2021 (Task 2) detection rule: centres
  of mass (of mask components when masks exist, see ``evaluation.valdo``) within
  R mm (default 5); duplicates are false positives.

The result does not depend on the order of the inputs: both sides are sorted by
a canonical key before the assignment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from evaluation.cases import LabelMap, PredCMB, TruthCMB
from evaluation.errors import EvaluationInputError


class MatchKind(StrEnum):
    CENTER = "center"
    SIZE_AWARE = "size-aware"
    OVERLAP = "overlap"
    VALDO = "valdo"


@dataclass(frozen=True)
class MatchRule:
    """How a prediction and a true CMB are paired. Build with ``MatchRule.parse("center:5")``."""

    kind: MatchKind = MatchKind.CENTER
    radius_mm: float = 5.0  # center, valdo
    size_factor: float = 1.0  # size-aware
    min_radius_mm: float = 1.5  # size-aware floor
    min_iou: float = 0.0  # overlap

    def __post_init__(self) -> None:
        if isinstance(self.kind, str) and not isinstance(self.kind, MatchKind):
            object.__setattr__(self, "kind", MatchKind(self.kind))
        for name in ("radius_mm", "size_factor", "min_radius_mm"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"MatchRule.{name} must be a positive number, got {value}")
        if not 0.0 <= self.min_iou < 1.0:
            raise ValueError(f"MatchRule.min_iou must be in [0, 1), got {self.min_iou}")

    @classmethod
    def parse(cls, spec: str) -> MatchRule:
        """``center``, ``center:5``, ``size-aware[:F]``, ``overlap[:IoU]``, ``valdo[:R]``."""
        name, _, arg = spec.strip().lower().partition(":")
        name = name.replace("_", "-")
        try:
            kind = MatchKind(name)
        except ValueError as e:
            choices = ", ".join(k.value for k in MatchKind)
            raise ValueError(f"unknown match rule {spec!r}; choose one of {choices}") from e
        if not arg:
            return cls(kind=kind)
        try:
            value = float(arg)
        except ValueError as e:
            raise ValueError(f"match rule {spec!r}: {arg!r} is not a number") from e
        if kind in (MatchKind.CENTER, MatchKind.VALDO):
            return cls(kind=kind, radius_mm=value)
        if kind is MatchKind.SIZE_AWARE:
            return cls(kind=kind, size_factor=value)
        return cls(kind=kind, min_iou=value)

    @property
    def needs_masks(self) -> bool:
        return self.kind is MatchKind.OVERLAP

    def describe(self) -> str:
        if self.kind in (MatchKind.CENTER, MatchKind.VALDO):
            return f"{self.kind.value}:{self.radius_mm:g}"
        if self.kind is MatchKind.SIZE_AWARE:
            return f"size-aware:{self.size_factor:g} (floor {self.min_radius_mm:g} mm)"
        return f"overlap:{self.min_iou:g}"


@dataclass(frozen=True)
class Pair:
    """A true positive: ``truth[truth_index]`` matched to ``preds[pred_index]``."""

    truth_index: int
    pred_index: int
    distance_mm: float
    iou: float | None = None


@dataclass(frozen=True)
class CaseMatch:
    """The matching of one case. Indices refer to the ``truth`` and ``preds`` tuples."""

    case_id: str
    truth: tuple[TruthCMB, ...]
    preds: tuple[PredCMB, ...]
    pairs: tuple[Pair, ...]

    @property
    def n_truth(self) -> int:
        return len(self.truth)

    @property
    def n_pred(self) -> int:
        return len(self.preds)

    @property
    def tp(self) -> int:
        return len(self.pairs)

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        return self.n_truth - self.tp

    def pred_for_truth(self) -> dict[int, Pair]:
        return {p.truth_index: p for p in self.pairs}

    def truth_for_pred(self) -> dict[int, Pair]:
        return {p.pred_index: p for p in self.pairs}

    def max_probability(self) -> float:
        """The scan-level score: the highest probability of a prediction (0 without any)."""
        return max((p.probability for p in self.preds), default=0.0)


def _truth_key(t: TruthCMB) -> tuple[float, ...]:
    return (*t.center_lps_mm, float(t.label if t.label is not None else -1))


def _pred_key(p: PredCMB) -> tuple[float, ...]:
    return (-p.probability, *p.center_lps_mm, p.diameter_mm or 0.0, float(p.id))


def distance_matrix(truth: Sequence[TruthCMB], preds: Sequence[PredCMB]) -> npt.NDArray[np.float64]:
    """Centre distances in mm, shape (n_truth, n_pred)."""
    a = np.array([t.center_lps_mm for t in truth], dtype=np.float64).reshape(-1, 3)
    b = np.array([p.center_lps_mm for p in preds], dtype=np.float64).reshape(-1, 3)
    return np.asarray(np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1), dtype=np.float64)


def label_overlaps(
    truth_map: LabelMap, pred_map: LabelMap
) -> tuple[dict[tuple[int, int], int], dict[int, int], dict[int, int]]:
    """Voxel counts: intersections {(truth label, pred label): n}, truth sizes, pred sizes."""
    ta = np.asarray(truth_map.array).reshape(-1).astype(np.int64)
    pa = np.asarray(pred_map.array).reshape(-1).astype(np.int64)
    both = (ta > 0) & (pa > 0)
    inter: dict[tuple[int, int], int] = {}
    if both.any():
        pairs, counts = np.unique(np.stack([ta[both], pa[both]]), axis=1, return_counts=True)
        inter = {(int(a), int(b)): int(c) for (a, b), c in zip(pairs.T, counts, strict=True)}
    tl, tc = np.unique(ta[ta > 0], return_counts=True)
    pl, pc = np.unique(pa[pa > 0], return_counts=True)
    t_size = {int(a): int(c) for a, c in zip(tl, tc, strict=True)}
    p_size = {int(a): int(c) for a, c in zip(pl, pc, strict=True)}
    return inter, t_size, p_size


def iou_matrix(
    truth: Sequence[TruthCMB],
    preds: Sequence[PredCMB],
    truth_map: LabelMap,
    pred_map: LabelMap,
) -> npt.NDArray[np.float64]:
    """IoU of every truth instance with every predicted instance, shape (n_truth, n_pred)."""
    if not truth_map.same_grid(pred_map):
        raise EvaluationInputError(
            "overlap matching needs truth and prediction label maps on one grid "
            f"(shapes {truth_map.array.shape} vs {pred_map.array.shape}); resample first "
            "(evaluation.io.resample_like)"
        )
    t_labels = []
    for n, t in enumerate(truth):
        if t.label is None:
            raise EvaluationInputError(f"overlap matching: truth CMB #{n} has no mask label")
        t_labels.append(int(t.label))
    p_labels = [int(p.id) for p in preds]
    inter, t_size, p_size = label_overlaps(truth_map, pred_map)
    out = np.zeros((len(truth), len(preds)), dtype=np.float64)
    for i, tl in enumerate(t_labels):
        for j, pl in enumerate(p_labels):
            n = inter.get((tl, pl), 0)
            if n:
                out[i, j] = n / (int(t_size[tl]) + int(p_size[pl]) - n)
    return out


def match_case(
    truth: Sequence[TruthCMB],
    preds: Sequence[PredCMB],
    rule: MatchRule | None = None,
    *,
    case_id: str = "",
    truth_map: LabelMap | None = None,
    pred_map: LabelMap | None = None,
    iou: npt.NDArray[np.float64] | None = None,
) -> CaseMatch:
    """Match one case's predictions to its true CMBs (see the module docstring).

    The overlap rule needs either both label maps or ``iou``, the precomputed
    ``iou_matrix(truth, preds, ...)`` in the order of the arguments (evaluating
    many thresholds then needs the masks only once).
    """
    rule = rule or MatchRule()
    truth_t, preds_t = tuple(truth), tuple(preds)
    if not truth_t or not preds_t:
        return CaseMatch(case_id, truth_t, preds_t, ())
    t_order = sorted(range(len(truth_t)), key=lambda n: _truth_key(truth_t[n]))
    p_order = sorted(range(len(preds_t)), key=lambda n: _pred_key(preds_t[n]))
    ts = [truth_t[n] for n in t_order]
    ps = [preds_t[n] for n in p_order]
    dist = distance_matrix(ts, ps)
    given_iou, iou = iou, None
    if rule.kind is MatchKind.OVERLAP:
        if given_iou is not None:
            if given_iou.shape != (len(truth_t), len(preds_t)):
                raise ValueError(f"iou has shape {given_iou.shape}, expected {dist.shape}")
            iou = given_iou[np.ix_(t_order, p_order)]
        elif truth_map is not None and pred_map is not None:
            iou = iou_matrix(ts, ps, truth_map, pred_map)
        else:
            raise EvaluationInputError(
                f"case {case_id}: the overlap rule needs truth and predicted label maps"
            )
        feasible = (iou > 0) & (iou >= rule.min_iou)
        cost = 1.0 - iou
    elif rule.kind is MatchKind.SIZE_AWARE:
        dt = np.array([t.match_diameter_mm or 0.0 for t in ts])
        dp = np.array([p.diameter_mm or 0.0 for p in ps])
        limit = np.maximum(rule.min_radius_mm, rule.size_factor * (dt[:, None] + dp[None, :]) / 2)
        feasible = dist <= limit
        cost = dist
    else:
        feasible = dist <= rule.radius_mm
        cost = dist
    if not feasible.any():
        return CaseMatch(case_id, truth_t, preds_t, ())
    # A penalty larger than any sum of feasible costs: more pairs always win.
    big = (min(len(ts), len(ps)) + 1) * (float(cost[feasible].max()) + 1.0)
    rows, cols = linear_sum_assignment(np.where(feasible, cost, big))
    pairs = [
        Pair(
            truth_index=t_order[r],
            pred_index=p_order[c],
            distance_mm=float(dist[r, c]),
            iou=float(iou[r, c]) if iou is not None else None,
        )
        for r, c in zip(rows, cols, strict=True)
        if feasible[r, c]
    ]
    pairs.sort(key=lambda p: p.truth_index)
    return CaseMatch(case_id, truth_t, preds_t, tuple(pairs))
