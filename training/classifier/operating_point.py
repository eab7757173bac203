"""Set the classifier's operating point for the product path (location filter included).

``cmb classifier export`` picks ``cmb.threshold`` on validation of the
cascade alone.  The product runs the location filter behind it, and may score
with test-time augmentation (``cmb.tta``, :mod:`model.candidate_classifier`),
so the best threshold under the same rule (highest recall at <= 0.5 false
positives per scan) differs.  It is chosen with
``training.parcellation.filter_effect --operating-point`` on a *selection*
set, then written here together with the product path's metrics on the
held-out set at that threshold (its ``filter_effect.json``).  The weights are
untouched; the ``metrics.json`` beside the model gets an ``operating_point``
section.

The summary names the U-Net it was measured behind.  It must be the one the
classifier belongs to (``cmb.unet``), or, with ``unet``, the classifier is
paired with that U-Net instead: a retrained U-Net can keep a classifier once
their pair has been measured.  The U-Net whose candidates trained the
classifier stays recorded (``cmb.unet_trained_on``).

The summary also says at which U-Net probability the candidates were
extracted (``filter_effect --unet-threshold``); that must be the classifier's
``cmb.candidate_threshold``, or the one set with it (``unet_threshold``):
the product extracts its candidates at exactly the measured threshold.

With ``unet_spacing_mm`` (and ``unet``) the cascade runs that U-Net on
another grid (``cmb.unet_spacing_mm``; ``filter_effect --unet-spacing``
measured the summary there, and its U-Net identity names the grid): how a
classifier trained behind the U-Net's own grid is paired with the
candidates of a finer one once that pair has been measured.  The cubes are
still cut on the classifier's own ``cmb.spacing_mm``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from model.candidate_classifier import (
    CANDIDATE_THRESHOLD_KEY,
    TASK,
    TTA_KEY,
    TTA_MODES,
    UNET_KEY,
    UNET_SPACING_KEY,
    candidate_threshold,
    format_unet_spacing,
    unet_identity,
    unet_spacing,
)
from model.errors import InputError
from model.onnx_model import OnnxModel
from training.export import set_metadata


def held_out_metrics(
    filter_effect: dict[str, Any], threshold: float, configuration: str = "defaults"
) -> dict[str, Any]:
    """The product path's metrics at ``threshold`` from a ``filter_effect.json``."""
    rows = filter_effect["by_configuration"].get(configuration)
    if rows is None:
        raise InputError(f"no configuration {configuration!r} in the filter-effect summary")
    row = rows.get(f"{threshold:g}")
    if row is None:
        raise InputError(
            f"threshold {threshold:g} was not measured there (measured: {', '.join(rows)})"
        )
    return {
        "unet": filter_effect.get("unet", ""),
        # None in summaries written before it was recorded
        "unet_threshold": filter_effect.get("unet_threshold"),
        "scans": filter_effect["n_cases"],
        "cmbs": filter_effect["n_truth"],
        "cmbs_ge3mm": filter_effect.get("n_truth_large"),
        # summaries written before the rule was recorded used the default, center:5
        "match_rule": filter_effect.get("match_rule", "center:5"),
        "location_filter": configuration,
        "recall_ge3mm": row["recall_large"],
        **{k: v for k, v in row.items() if k != "recall_large"},
    }


def set_operating_point(
    model_path: str | Path,
    threshold: float,
    metrics: dict[str, Any],
    *,
    selected_on: str,
    tta: str | None = None,
    unet: OnnxModel | None = None,
    unet_threshold: float | None = None,
    unet_spacing_mm: tuple[float, float, float] | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """Write ``cmb.threshold``, ``cmb.metrics`` (and ``cmb.tta``, ``cmb.unet``,
    ``cmb.candidate_threshold``, ``cmb.unet_spacing_mm``, the version) of a classifier.

    Returns the metrics as recorded.  ``tta`` ``None`` keeps the file's setting;
    ``unet`` pairs the classifier with that U-Net; ``unet_threshold`` changes
    the U-Net probability its candidates are extracted at; ``unet_spacing_mm``
    the grid the U-Net runs on (needs ``unet``; the U-Net's own spacing removes
    the key); see the module docstring.
    """
    if tta is not None and tta not in TTA_MODES:
        raise InputError(f"cmb.{TTA_KEY} {tta!r} is not one of {TTA_MODES}")
    if unet_spacing_mm is not None and unet is None:
        raise InputError(
            "a new U-Net grid pairs the classifier with that U-Net run on it: name the U-Net "
            "(--unet)"
        )
    path = Path(model_path)
    model = OnnxModel.load(path, device="cpu")
    if model.metadata.task != TASK:
        raise InputError(f"{path} is a {model.metadata.task!r} model, not the candidate classifier")
    grid = unet_spacing(model) if unet_spacing_mm is None else unet_spacing_mm
    extra = paired_extra(dict(model.metadata.extra), str(metrics.get("unet", "")), unet, grid)
    if unet_spacing_mm is not None and unet is not None:
        if np.allclose(unet_spacing_mm, unet.metadata.spacing_mm):
            extra.pop(UNET_SPACING_KEY, None)
        else:
            extra[UNET_SPACING_KEY] = format_unet_spacing(unet_spacing_mm)
    previous = candidate_threshold(model)
    extract_at = previous if unet_threshold is None else unet_threshold
    check_unet_threshold(metrics.get("unet_threshold"), extract_at, changed=unet_threshold)
    extra[CANDIDATE_THRESHOLD_KEY] = repr(float(extract_at))
    if tta is not None:
        extra[TTA_KEY] = tta
    recorded = {**metrics, "selected_on": selected_on, "tta": extra.get(TTA_KEY, "none")}
    updated = dataclasses.replace(
        model.metadata,
        threshold=threshold,
        metrics=recorded,
        extra=extra,
        version=version or model.metadata.version,
    )
    set_metadata(path, updated)  # atomic: written beside the file, then renamed over it
    report = path.with_suffix(".metrics.json")
    if report.is_file():
        data = json.loads(report.read_text())
        data["operating_point"] = {
            "threshold": threshold,
            "previous_threshold": model.metadata.threshold,
            "candidate_threshold": extract_at,
            "previous_candidate_threshold": previous,
            "held_out": recorded,
        }
        data["threshold"] = threshold
        report.write_text(json.dumps(data, indent=2, sort_keys=True))
    return recorded


def check_unet_threshold(measured: Any, extract_at: float, *, changed: float | None) -> None:
    """InputError unless the held-out candidates were extracted at ``extract_at``.

    Summaries that do not say (written before it was recorded) are accepted
    only when the threshold is not being changed.
    """
    if measured is None:
        if changed is not None:
            raise InputError(
                "the held-out summary does not record its U-Net threshold: measure it again "
                "with filter_effect --unet-threshold before changing cmb.candidate_threshold"
            )
        return
    if abs(float(measured) - extract_at) > 1e-9:
        raise InputError(
            f"the held-out candidates were extracted at U-Net >= {float(measured):g}, but the "
            f"classifier would extract them at {extract_at:g}: pass --unet-threshold "
            f"{float(measured):g} or measure at {extract_at:g}"
        )


def paired_extra(
    extra: dict[str, str],
    measured: str,
    unet: OnnxModel | None,
    spacing_mm: tuple[float, float, float] | None = None,
) -> dict[str, str]:
    """The classifier's ``extra`` metadata after checking what the metrics were measured behind.

    InputError where the held-out metrics (measured behind ``measured``) would
    be written into a classifier that belongs to another U-Net, or to the same
    U-Net run on another grid (``spacing_mm``: the classifier's
    ``cmb.unet_spacing_mm``).
    """
    pinned = extra.get(UNET_KEY, "")
    if unet is None:
        if measured and measured != pinned:
            raise InputError(
                f"the held-out summary was measured behind {measured}, but the classifier "
                f"belongs to {pinned or 'an unrecorded U-Net'}: pass that U-Net with --unet "
                "to pair them"
            )
        return extra
    identity = unet_identity(unet, spacing_mm)
    if measured != identity:
        raise InputError(
            f"the held-out summary was measured behind {measured or 'an unrecorded U-Net'}, "
            f"not {identity}: measure the pair with filter_effect --unet"
        )
    if pinned != identity:
        extra.setdefault("unet_trained_on", pinned)
        extra[UNET_KEY] = identity
    return extra
