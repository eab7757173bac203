"""Choose the stack of a study to analyse for microbleeds, and say why.

Every stack was classified when it was read (`model.series_classify`, rules
in ``model/rules/series_rules.json``).  Here a stack qualifies when its kind
is accepted (SWI or T2*-GRE magnitude), it has enough slices and its
geometry is valid; among several, the documented preference of the rules
table decides (SWI before T2*, thinner slices, the echo closest to the
field's target TE, finer in-plane spacing, more slices, lower series number).
The choice and a reason for every other stack are returned as a
`SeriesSelection`; when nothing qualifies, `NoUsableSeriesError` lists every
stack with its reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from model.errors import GeometryError, NoUsableSeriesError
from model.series import Series, Study
from model.series_classify import load_rules
from model.types import RejectedSeries, SequenceKind, SeriesSelection

__all__ = ["select_series", "target_echo_time_ms"]

_GEOMETRY = "inconsistent geometry: "
_KIND_NAMES = {
    SequenceKind.SWI: "SWI",
    SequenceKind.T2STAR: "T2*-GRE",
}


def target_echo_time_ms(
    field_strength_t: float | None, rules: dict[str, Any] | None = None
) -> float:
    """The echo time the rules prefer at this field strength (multi-echo choice)."""
    sel = (rules or load_rules())["selection"]
    if field_strength_t is None:
        return float(sel["target_echo_time_unknown_field_ms"])
    for row in sel["target_echo_time_ms"]:
        if field_strength_t <= float(row["field_strength_max_t"]):
            return float(row["echo_time_ms"])
    return float(sel["target_echo_time_ms"][-1]["echo_time_ms"])


@dataclass(frozen=True)
class _Candidate:
    series: Series
    key: tuple[float, ...]
    target_te: float


def _key(series: Series, rules: dict[str, Any]) -> _Candidate:
    info = series.info
    sel = rules["selection"]
    rank = float(sel["kind_rank"].get(info.sequence_kind.value, 99))
    thickness = info.slice_thickness_mm or info.spacing_between_slices_mm or math.inf
    target = target_echo_time_ms(info.field_strength_t, rules)
    te = info.echo_time_ms
    te_distance = abs(te - target) if te is not None else math.inf
    in_plane = (
        info.pixel_spacing_mm[0] * info.pixel_spacing_mm[1] if info.pixel_spacing_mm else math.inf
    )
    key = (
        rank,
        round(thickness, 3),
        round(te_distance, 3),
        -(te or 0.0),
        round(in_plane, 4),
        -float(info.n_frames),
        float(info.series_number or 0),
    )
    return _Candidate(series=series, key=key, target_te=target)


def _why_preferred(best: _Candidate, other: _Candidate) -> str:
    """The first preference criterion that separates ``best`` from ``other``."""
    b, o = best.series.info, other.series.info
    for index, (kb, ko) in enumerate(zip(best.key, other.key, strict=True)):
        if kb == ko:
            continue
        if index == 0:
            return (
                f"{_KIND_NAMES.get(b.sequence_kind, b.sequence_kind.value)} is preferred over "
                f"{_KIND_NAMES.get(o.sequence_kind, o.sequence_kind.value)}"
            )
        if index == 1:
            return f"thinner slices ({b.slice_thickness_mm} mm vs {o.slice_thickness_mm} mm)"
        if index in (2, 3):
            return (
                f"echo time {b.echo_time_ms} ms is closer to the {best.target_te:g} ms target "
                f"than {o.echo_time_ms} ms"
            )
        if index == 4:
            return f"finer in-plane spacing ({b.pixel_spacing_mm} vs {o.pixel_spacing_mm} mm)"
        if index == 5:
            return f"more slices ({b.n_frames} vs {o.n_frames})"
        return f"lower series number ({b.series_number} vs {o.series_number})"
    return "identical by every criterion; first in series order"


def _rejection(series: Series, rules: dict[str, Any]) -> str | None:
    """Why ``series`` cannot be analysed, or None when it qualifies."""
    sel = rules["selection"]
    info = series.info
    if info.sequence_kind.value not in sel["accept_kinds"]:
        return f"{info.sequence_kind.value}: {series.classification_reason}"
    if series.nifti_path is not None:
        return None
    if info.n_frames < int(sel["min_slices"]):
        return f"only {info.n_frames} slice(s); at least {sel['min_slices']} needed for a 3D volume"
    try:
        series.geometry()
    except GeometryError as e:
        return f"{_GEOMETRY}{str(e).removeprefix(series.label + ': ')}"
    return None


def _describe_choice(chosen: _Candidate, n_candidates: int, rules: dict[str, Any]) -> str:
    info = chosen.series.info
    parts = [f"{chosen.series.label}: {chosen.series.classification_reason}"]
    if len(info.echo_times_ms) > 1 and info.echo_time_ms is not None:
        echoes = ", ".join(f"{t:g}" for t in info.echo_times_ms)
        parts.append(
            f"echo {info.echo_time_ms:g} ms of [{echoes}] ms, the closest to the "
            f"{chosen.target_te:g} ms target at {info.field_strength_t or '?'} T"
        )
    if n_candidates > 1:
        parts.append(
            f"preferred over {n_candidates - 1} other qualifying stack(s) "
            f"({rules['selection']['preference']})"
        )
    return "; ".join(parts)


def select_series(
    study: Study,
    force_series_uid: str | None = None,
    rules: dict[str, Any] | None = None,
) -> tuple[Series, SeriesSelection]:
    """The stack to analyse and the recorded selection (chosen, reason, rejected)."""
    rules = rules or load_rules()
    if force_series_uid:
        return _forced(study, force_series_uid, rules)
    rejected: list[RejectedSeries] = []
    candidates: list[_Candidate] = []
    for series in study.series:
        reason = _rejection(series, rules)
        if reason is None:
            candidates.append(_key(series, rules))
        else:
            rejected.append(RejectedSeries(series.stack_id, reason))
    if not candidates:
        pairs = list(zip(study.series, rejected, strict=True))
        listing = "; ".join(f"{s.label}: {r.reason}" for s, r in pairs) or "no series"
        uid = study.study_instance_uid
        broken = [(s, r) for s, r in pairs if r.reason.startswith(_GEOMETRY)]
        if broken:
            # The series the user wanted exists but cannot be read as a grid: say so
            # (GeometryError) rather than "no usable series".
            broken_series, broken_rejection = broken[0]
            raise GeometryError(
                f"{broken_series.label}: {broken_rejection.reason.removeprefix(_GEOMETRY)} "
                f"(no other usable GRE/SWI series in study {uid}: {listing})"
            )
        raise NoUsableSeriesError(f"no usable GRE/SWI series in study {uid}: {listing}")
    candidates.sort(key=lambda c: c.key)
    best = candidates[0]
    for other in candidates[1:]:
        rejected.append(
            RejectedSeries(
                other.series.stack_id,
                f"qualifies ({other.series.info.sequence_kind.value}) but "
                f"{best.series.stack_id} is preferred: {_why_preferred(best, other)}",
            )
        )
    order = {s.stack_id: i for i, s in enumerate(study.series)}
    rejected.sort(key=lambda r: order.get(r.series_instance_uid, 0))
    selection = SeriesSelection(
        chosen=best.series.stack_id,
        reason=_describe_choice(best, len(candidates), rules),
        rejected=tuple(rejected),
    )
    return best.series, selection


def _forced(study: Study, uid: str, rules: dict[str, Any]) -> tuple[Series, SeriesSelection]:
    matches = study.find(uid)
    if not matches:
        available = ", ".join(s.stack_id for s in study.series)
        raise NoUsableSeriesError(
            f"series {uid} is not in study {study.study_instance_uid} (available: {available})"
        )
    qualifying = [_key(s, rules) for s in matches if _rejection(s, rules) is None]
    if qualifying:
        chosen = min(qualifying, key=lambda c: c.key).series
    else:
        magnitude = [s for s in matches if s.info.sequence_kind is not SequenceKind.PHASE]
        chosen = (magnitude or matches)[0]
    chosen.geometry()  # forcing a series does not excuse broken geometry
    rejected = tuple(
        RejectedSeries(s.stack_id, f"not the series forced by the user ({uid})")
        for s in study.series
        if s is not chosen
    )
    reason = (
        f"forced by the user ({uid}); {chosen.label} classified as "
        f"{chosen.info.sequence_kind.value}: {chosen.classification_reason}"
    )
    return chosen, SeriesSelection(chosen=chosen.stack_id, reason=reason, rejected=rejected)
