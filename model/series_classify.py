"""What kind of series is this?  Header features plus the rules table.

`header_features` turns one image's DICOM header (classic, or an Enhanced MR
header with one frame's functional groups) into the flat `SeriesFeatures`
that the rules in ``model/rules/series_rules.json`` test; `classify` runs
those rules (first match wins) and returns the `SequenceKind` with the reason.
The rules are data so that a site can adapt them without code changes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from model.types import SequenceKind

RULES_PATH = Path(__file__).resolve().parent / "rules" / "series_rules.json"

__all__ = [
    "RULES_PATH",
    "SeriesFeatures",
    "classify",
    "echo_time_ms",
    "functional_groups",
    "header_features",
    "image_kind",
    "load_rules",
    "private_value",
]


@dataclass(frozen=True)
class SeriesFeatures:
    """The header facts that the classification rules may test."""

    modality: str = ""
    image_type: tuple[str, ...] = ()
    image_kind: str = "magnitude"  # magnitude, phase, fieldmap, real, imaginary
    series_description: str = ""
    protocol_name: str = ""
    sequence_name: str = ""
    ge_psd_name: str = ""
    manufacturer: str = ""
    scanning_sequence: tuple[str, ...] = ()
    scanning_sequence_known: bool = False
    echo_time_ms: float | None = None


@lru_cache(maxsize=8)
def _load_rules_cached(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        rules: dict[str, Any] = json.load(f)
    for rule in rules["classification"]:
        SequenceKind(rule["kind"])  # fail at load on a typo, not at run time
    return rules


def load_rules(path: str | Path | None = None) -> dict[str, Any]:
    """The rules table (cached); ``path`` overrides the packaged one."""
    return _load_rules_cached(str(path or RULES_PATH))


def private_value(ds: Dataset, group: int, creator: str, offset: int) -> Any:
    """A private element's value by creator, or None when absent."""
    try:
        return ds.get_private_item(group, offset, creator).value
    except KeyError:
        return None


_KIND_TOKENS: dict[str, str] = {
    "M": "magnitude",
    "MAGNITUDE": "magnitude",
    "M_FFE": "magnitude",
    "M_SE": "magnitude",
    "M_IR": "magnitude",
    "P": "phase",
    "PHASE": "phase",
    "P_FFE": "phase",
    "P_SE": "phase",
    "PHASE MAP": "phase",
    "R": "real",
    "REAL": "real",
    "R_FFE": "real",
    "I": "imaginary",
    "IMAGINARY": "imaginary",
    "I_FFE": "imaginary",
    "FIELD_MAP": "fieldmap",
    "B0": "fieldmap",
    "B0 MAP": "fieldmap",
    "FIELDMAP": "fieldmap",
}
_GE_IMAGE_KIND = {0: "magnitude", 1: "phase", 2: "real", 3: "imaginary"}
_COMPLEX = {"MAGNITUDE": "magnitude", "PHASE": "phase", "REAL": "real", "IMAGINARY": "imaginary"}


def image_kind(ds: Dataset, frame: Dataset | None = None) -> str:
    """Magnitude, phase, fieldmap, real or imaginary, from the vendor's own labels.

    Order of evidence: Enhanced MR ``FrameType`` tokens (FIELD_MAP) and
    ``ComplexImageComponent``; Philips (2005,1011) "Image Type MR"; GE
    (0043,102F) (0 magnitude, 1 phase, 2 real, 3 imaginary); ImageType
    values 3-5 (Siemens M/P, Philips M_FFE/P_FFE).
    """
    if frame is not None:
        ftype = frame.get("MRImageFrameTypeSequence")
        if ftype:
            tokens = [str(t).upper() for t in ftype[0].get("FrameType", [])[2:]]
            if any(_KIND_TOKENS.get(t) == "fieldmap" for t in tokens):
                return "fieldmap"
            comp = str(ftype[0].get("ComplexImageComponent", "")).upper()
            if comp in _COMPLEX:
                return _COMPLEX[comp]
    comp = str(ds.get("ComplexImageComponent", "")).upper()
    if comp in _COMPLEX:
        return _COMPLEX[comp]
    philips = private_value(ds, 0x2005, "Philips MR Imaging DD 001", 0x11)
    if isinstance(philips, str) and philips.upper() in _KIND_TOKENS:
        return _KIND_TOKENS[philips.upper()]
    ge = private_value(ds, 0x0043, "GEMS_PARM_01", 0x2F)
    if isinstance(ge, int) and ge in _GE_IMAGE_KIND and ge != 0:
        return _GE_IMAGE_KIND[ge]
    for token in [str(t).upper() for t in ds.get("ImageType", [])[2:5]]:
        if token in _KIND_TOKENS:
            return _KIND_TOKENS[token]
    return "magnitude"


def _scanning_sequence(ds: Dataset, frame: Dataset | None) -> tuple[tuple[str, ...], bool]:
    if "ScanningSequence" in ds:
        value = ds.ScanningSequence
        tokens = [value] if isinstance(value, str) else list(value)
        return tuple(str(t).upper() for t in tokens if t), True
    # Enhanced MR: MR Pulse Sequence module plus the MR Modifier functional group.
    echo = str(ds.get("EchoPulseSequence", "")).upper()
    if not echo:
        return (), False
    tokens = {"GRADIENT": ["GR"], "SPIN": ["SE"], "BOTH": ["GR", "SE"]}.get(echo, [])
    for group in functional_groups(ds, frame, "MRModifierSequence"):
        if str(group.get("InversionRecovery", "NO")).upper() == "YES":
            tokens.append("IR")
    return tuple(tokens), bool(tokens)


def functional_groups(ds: Dataset, frame: Dataset | None, keyword: str) -> list[Dataset]:
    """The items of functional group ``keyword`` for a frame (per-frame first, then shared)."""
    if frame is not None and keyword in frame:
        return list(frame[keyword].value)
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and keyword in shared[0]:
        return list(shared[0][keyword].value)
    return []


def echo_time_ms(ds: Dataset, frame: Dataset | None = None) -> float | None:
    """EchoTime (classic) or EffectiveEchoTime (Enhanced MR, per frame or shared)."""
    for item in functional_groups(ds, frame, "MREchoSequence"):
        if "EffectiveEchoTime" in item:
            return float(item.EffectiveEchoTime)
    value = ds.get("EchoTime")
    return float(value) if value not in (None, "") else None


def header_features(ds: Dataset, frame: Dataset | None = None) -> SeriesFeatures:
    """The classification features of one image (``frame``: its per-frame item)."""
    image_type: list[str] = []
    if frame is not None:
        for item in functional_groups(ds, frame, "MRImageFrameTypeSequence"):
            image_type = [str(t) for t in item.get("FrameType", [])]
    if not image_type:
        image_type = [str(t) for t in ds.get("ImageType", [])]
    if frame is not None:
        # Philips keeps the classic ImageType (M_FFE, P_FFE...) in a private per-frame item.
        for item in _private_frame_items(frame):
            image_type += [str(t) for t in item.get("ImageType", [])]
    scanning, known = _scanning_sequence(ds, frame)
    sequence_name = str(ds.get("SequenceName", "") or ds.get("PulseSequenceName", "") or "")
    return SeriesFeatures(
        modality=str(ds.get("Modality", "")).upper(),
        image_type=tuple(t.upper() for t in image_type),
        image_kind=image_kind(ds, frame),
        series_description=str(ds.get("SeriesDescription", "") or ""),
        protocol_name=str(ds.get("ProtocolName", "") or ""),
        sequence_name=sequence_name,
        ge_psd_name=" ".join(
            str(v)
            for v in (
                private_value(ds, 0x0019, "GEMS_ACQU_01", 0x9C),
                private_value(ds, 0x0019, "GEMS_ACQU_01", 0x9E),
            )
            if v
        ),
        manufacturer=str(ds.get("Manufacturer", "") or ""),
        scanning_sequence=scanning,
        scanning_sequence_known=known,
        echo_time_ms=echo_time_ms(ds, frame),
    )


def _private_frame_items(frame: Dataset) -> list[Dataset]:
    try:
        elem = frame.get_private_item(0x2005, 0x0F, "Philips MR Imaging DD 005")
    except KeyError:
        return []
    return list(elem.value) if elem.VR == "SQ" else []


def _matches(cond: dict[str, Any], f: SeriesFeatures) -> bool:
    """Evaluate one condition object of the rules language (see the JSON's 'about')."""
    results: list[bool] = []
    for key, value in cond.items():
        if key == "all":
            results.append(all(_matches(c, f) for c in value))
        elif key == "any":
            results.append(any(_matches(c, f) for c in value))
        elif key == "not":
            results.append(not _matches(value, f))
        elif key == "image_type_any":
            wanted = {str(v).upper() for v in value}
            results.append(bool(wanted & set(f.image_type)))
        elif key == "image_kind_in":
            results.append(f.image_kind in value)
        elif key == "modality_in":
            results.append(f.modality in value)
        elif key == "text":
            text = str(getattr(f, value["field"]))
            results.append(re.search(value["regex"], text, flags=re.IGNORECASE) is not None)
        elif key == "scanning_sequence_any":
            results.append(bool({str(v).upper() for v in value} & set(f.scanning_sequence)))
        elif key == "scanning_sequence_known":
            results.append(f.scanning_sequence_known is bool(value))
        elif key == "echo_time_ms_min":
            results.append(f.echo_time_ms is not None and f.echo_time_ms >= float(value))
        elif key == "echo_time_ms_max":
            results.append(f.echo_time_ms is not None and f.echo_time_ms <= float(value))
        else:
            raise ValueError(f"unknown condition {key!r} in series rules")
    return all(results)


def classify(
    features: SeriesFeatures, rules: dict[str, Any] | None = None
) -> tuple[SequenceKind, str]:
    """The first matching rule's kind and reason (the rules' default otherwise)."""
    rules = rules or load_rules()
    for rule in rules["classification"]:
        if _matches(rule["when"], features):
            return SequenceKind(rule["kind"]), f"{rule['reason']} [rule {rule['name']}]"
    default = rules["default"]
    return SequenceKind(default["kind"]), default["reason"]
