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
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from model.candidate_classifier import TASK, TTA_KEY, TTA_MODES
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
) -> dict[str, Any]:
    """Write ``cmb.threshold``, ``cmb.metrics`` (and ``cmb.tta``) of a classifier file.

    Returns the metrics as recorded.  ``tta`` ``None`` keeps the file's setting.
    """
    if tta is not None and tta not in TTA_MODES:
        raise InputError(f"cmb.{TTA_KEY} {tta!r} is not one of {TTA_MODES}")
    path = Path(model_path)
    model = OnnxModel.load(path, device="cpu")
    if model.metadata.task != TASK:
        raise InputError(f"{path} is a {model.metadata.task!r} model, not the candidate classifier")
    extra = dict(model.metadata.extra)
    if tta is not None:
        extra[TTA_KEY] = tta
    recorded = {**metrics, "selected_on": selected_on, "tta": extra.get(TTA_KEY, "none")}
    updated = dataclasses.replace(
        model.metadata, threshold=threshold, metrics=recorded, extra=extra
    )
    set_metadata(path, updated)  # atomic: written beside the file, then renamed over it
    report = path.with_suffix(".metrics.json")
    if report.is_file():
        data = json.loads(report.read_text())
        data["operating_point"] = {
            "threshold": threshold,
            "previous_threshold": model.metadata.threshold,
            "held_out": recorded,
        }
        data["threshold"] = threshold
        report.write_text(json.dumps(data, indent=2, sort_keys=True))
    return recorded
