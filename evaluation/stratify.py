"""Metrics stratified by CMB and acquisition properties, wherever the metadata exists.

Two kinds of strata:

* **Scan strata** (a scan belongs to one value): sequence, field strength, echo
  time, slice thickness, vendor (manufacturer), 2D/3D.  The acquisition comes
  from the truth (cases.jsonl) and, for keys it lacks, from detections.json.
  Each value gets the global detection metrics of its scans, the per-scan
  mean recall and the mean Dice of its matched CMBs.  Continuous values are binned (bins below).
* **CMB strata** (each CMB belongs to one value): size bin (true diameter),
  apparent size bin (apparent diameter, where the truth has one), MARS
  category, region, lobe; and, where the truth's image and label mask are
  read, ``local_cnr`` (:mod:`evaluation.conspicuity`; recall only, since a
  prediction has no such value).  Recall = TP / n_truth of the true CMBs in the value; precision
  counts a true positive in its *true* CMB's value and a false positive in the
  value of its *own* predicted attribute (its diameter, MARS, region), so
  precision per value = TP / (TP + FP) with those assignments.  Dice per
  matched CMB is averaged per value where masks exist.

Scan-level metrics (classification, FROC) are not given per CMB stratum: a scan
holds CMBs of several sizes, MARS categories and regions, so "the scan's size"
does not exist; ``CMB_STRATA_NOTE`` says so in metrics.json.

A stratum is left out when no case / CMB carries that metadata; CMBs or scans
without the value go to ``"unknown"`` when others have it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evaluation.cases import PredCMB, TruthCMB
from evaluation.classification import classification_metrics
from evaluation.froc import FrocCurve
from evaluation.matching import CaseMatch
from evaluation.metrics import Counts, per_scan_metrics
from evaluation.stats import mean_sd, ratio
from model.location import labels as location_labels

UNKNOWN = "unknown"

CMB_STRATA_NOTE = (
    "scan-level metrics (classification, FROC) are not stratified by CMB size, MARS category, "
    "region or lobe: a scan holds CMBs of several values, so it has no single value to be "
    "grouped by; these strata report CMB-level recall, precision and Dice only"
)

SIZE_BINS_MM = (0.0, 2.0, 3.0, 5.0, 10.0)  # lower edges: <2, 2-3, 3-5, 5-10, >=10 mm
TE_BINS_MS = (0.0, 10.0, 20.0, 30.0)  # <10, 10-20, 20-30, >=30 ms
THICKNESS_BINS_MM = (0.0, 1.25, 2.25, 3.25, 5.25)  # ~1, ~2, ~3, 3-5, >5 mm


def bin_label(value: float | None, edges: Sequence[float], unit: str = "") -> str | None:
    """``value``'s bin among the lower ``edges`` ("<2 mm", "2-3 mm", ">=10 mm"; no unit: "<2")."""
    if value is None:
        return None
    suffix = f" {unit}" if unit else ""
    for lo, hi in zip(edges, [*edges[1:], None], strict=True):
        if hi is None or value < hi:
            if hi is None:
                return f">={lo:g}{suffix}"
            if lo == 0.0:
                return f"<{hi:g}{suffix}"
            return f"{lo:g}-{hi:g}{suffix}"
    return None  # unreachable: the last bin is open


def size_bin(diameter_mm: float | None) -> str | None:
    return bin_label(diameter_mm, SIZE_BINS_MM, "mm")


def _num(acq: Mapping[str, Any], key: str) -> float | None:
    v = acq.get(key)
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _field(acq: Mapping[str, Any]) -> str | None:
    v = _num(acq, "field_strength_t")
    return f"{round(v, 1):g} T" if v is not None else None


def _vendor(acq: Mapping[str, Any]) -> str | None:
    v = acq.get("manufacturer")
    return str(v).strip().split()[0].upper() if v and str(v).strip() else None


def _text(key: str) -> Callable[[Mapping[str, Any]], str | None]:
    return lambda a: str(a[key]) if a.get(key) else None


SCAN_STRATA: dict[str, Callable[[Mapping[str, Any]], str | None]] = {
    "sequence": _text("sequence"),
    "field_strength": _field,
    "echo_time": lambda a: bin_label(_num(a, "echo_time_ms"), TE_BINS_MS, "ms"),
    "slice_thickness": lambda a: bin_label(_num(a, "slice_thickness_mm"), THICKNESS_BINS_MM, "mm"),
    "vendor": _vendor,
    "acquisition_type": _text("acquisition_type"),
    # the synthetic engine's tissue contrast ("prior": around each sequence's tissue means;
    # "random": SynthSeg-style random means); absent from real data, so omitted there
    "synthetic_contrast": _text("contrast_mode"),
}


def _squash(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_REGION_NAMES = {_squash(info.name): info.name for info in location_labels.BY_ID.values()}


def region_name(name: str | None) -> str | None:
    """One spelling per structure, the location filter's.

    Truth from the synthetic engine (and FreeSurfer-based annotations) spells
    regions as FreeSurfer's table does ("Left-Cerebral-White-Matter"), the
    location filter as ``model.location.labels`` does ("left cerebral white
    matter"); without this a region's false positives land in a row of their own.
    """
    if not name:
        return None
    return _REGION_NAMES.get(_squash(name), name)


CMB_STRATA: dict[str, tuple[Callable[[TruthCMB], str | None], Callable[[PredCMB], str | None]]] = {
    "size": (lambda t: size_bin(t.diameter_mm), lambda p: size_bin(p.diameter_mm)),
    # What a reader measures (blooming included) and what the quality floors are set on;
    # a detection's own diameter is measured on the image, so it is an apparent one too.
    "apparent_size": (
        lambda t: size_bin(t.diameter_apparent_mm),
        lambda p: size_bin(p.diameter_mm),
    ),
    "mars": (lambda t: t.mars, lambda p: p.mars),
    "region": (lambda t: region_name(t.region), lambda p: region_name(p.region)),
    "lobe": (lambda t: t.lobe, lambda p: p.lobe),
}


def stratum_sort_key(value: str) -> tuple[int, float, str]:
    """Unknown last; numeric bins in numeric order."""
    if value == UNKNOWN:
        return (2, 0.0, value)
    head = value.lstrip("<>=").split("-")[0].split()[0]
    try:
        return (0, float(head) - (0.5 if value.startswith("<") else 0.0), value)
    except ValueError:
        return (1, 0.0, value)


def stratify_scans(
    matches: Sequence[CaseMatch],
    acquisitions: Sequence[Mapping[str, Any]],
    cmb_dice: Mapping[tuple[str, int], float] | None = None,
    *,
    scores: Sequence[float] | None = None,
    froc_of: Callable[[Sequence[int]], FrocCurve] | None = None,
) -> dict[str, dict[str, Any]]:
    """Detection, classification, FROC and Dice per value of each scan stratum.

    ``scores`` are the per-scan AUC scores (default: each scan's maximum
    probability); ``froc_of(indices)`` builds the FROC curve of the scans at
    those positions of ``matches`` (no ``"froc"`` entry without it).
    """
    cmb_dice = cmb_dice or {}
    if scores is None:
        scores = [m.max_probability() for m in matches]
    out: dict[str, dict[str, Any]] = {}
    for name, key in SCAN_STRATA.items():
        values = [key(a) for a in acquisitions]
        if all(v is None for v in values):
            continue
        groups: dict[str, list[int]] = defaultdict(list)
        for n, v in enumerate(values):
            groups[v or UNKNOWN].append(n)
        table: dict[str, Any] = {}
        for value in sorted(groups, key=stratum_sort_key):
            idx = groups[value]
            ms = [matches[n] for n in idx]
            ids = {m.case_id for m in ms}
            c = Counts.of(ms)
            entry: dict[str, Any] = {
                **c.to_json(),
                "precision": c.precision,
                "recall": c.recall,
                "f1": c.f1,
                "fp_per_scan": c.fp_per_scan,
                "per_scan_recall": per_scan_metrics(ms)["recall"],
                "dice_per_cmb": mean_sd([v for (cid, _), v in cmb_dice.items() if cid in ids]),
                "classification": classification_metrics(ms, [scores[n] for n in idx]),
            }
            if froc_of is not None:
                entry["froc"] = froc_of(idx).to_json()
            table[value] = entry
        out[name] = table
    return out


def stratify_cmbs(
    matches: Sequence[CaseMatch],
    cmb_dice: Mapping[tuple[str, int], float] | None = None,
    truth_strata: Mapping[str, Mapping[tuple[str, int], str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Recall, precision and Dice per value of each CMB stratum (see the module docstring).

    ``truth_strata`` adds strata measured on the true CMBs only (name -> value per
    ``(case_id, truth index)``, e.g. ``local_cnr``): a prediction has no such value, so
    their ``fp`` and ``precision`` are None; true CMBs without a value go to ``unknown``.
    """
    cmb_dice = cmb_dice or {}
    out: dict[str, dict[str, Any]] = {}
    for name, values in (truth_strata or {}).items():
        if values:
            out[name] = _stratum(matches, _measured(values), None, cmb_dice)
    for name, (tkey, pkey) in CMB_STRATA.items():
        if any(tkey(t) is not None for m in matches for t in m.truth):
            out[name] = _stratum(matches, _recorded(tkey), pkey, cmb_dice)
    return out


def _measured(values: Mapping[tuple[str, int], str]) -> Callable[[CaseMatch, int], str | None]:
    return lambda m, i: values.get((m.case_id, i))


def _recorded(key: Callable[[TruthCMB], str | None]) -> Callable[[CaseMatch, int], str | None]:
    return lambda m, i: key(m.truth[i])


def _stratum(
    matches: Sequence[CaseMatch],
    truth_value: Callable[[CaseMatch, int], str | None],
    pred_value: Callable[[PredCMB], str | None] | None,
    cmb_dice: Mapping[tuple[str, int], float],
) -> dict[str, Any]:
    """One CMB stratum's table; without ``pred_value`` false positives are not assigned
    (``fp`` and ``precision`` None)."""
    n_truth: dict[str, int] = defaultdict(int)
    tp: dict[str, int] = defaultdict(int)
    fp: dict[str, int] = defaultdict(int)
    dice: dict[str, list[float | None]] = defaultdict(list)
    for m in matches:
        matched = m.pred_for_truth()
        for i in range(len(m.truth)):
            v = truth_value(m, i) or UNKNOWN
            n_truth[v] += 1
            if i in matched:
                tp[v] += 1
                if (m.case_id, i) in cmb_dice:
                    dice[v].append(cmb_dice[(m.case_id, i)])
        if pred_value is not None:
            matched_preds = m.truth_for_pred()
            for j, p in enumerate(m.preds):
                if j not in matched_preds:
                    fp[pred_value(p) or UNKNOWN] += 1
    table: dict[str, Any] = {}
    for value in sorted(set(n_truth) | set(fp), key=stratum_sort_key):
        table[value] = {
            "n_truth": n_truth[value],
            "tp": tp[value],
            "fn": n_truth[value] - tp[value],
            "fp": fp[value] if pred_value is not None else None,
            "recall": ratio(tp[value], n_truth[value]),
            "precision": ratio(tp[value], tp[value] + fp[value])
            if pred_value is not None
            else None,
            "dice_per_cmb": mean_sd(dice[value]) if dice[value] else None,
        }
    return table
