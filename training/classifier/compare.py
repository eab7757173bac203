"""Recall at several false-positive rates: U-Net alone vs the cascade, on harvested candidates.

Both rank the same candidates (U-Net probability >= the classifier's
candidate threshold, labelled by the harvest's matching): by the U-Net's
maximum, or by the classifier's probability.  Cheap (no inference of the
U-Net), so it is the quick check after training; the shipped numbers come
from ``cmb classifier export --val-data`` (the product path, re-matched).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.classifier.train import Pool, load_checkpoint, recall_at_fp, score

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def compare(
    checkpoint: str | Path, val_dirs: Sequence[str], fp_rates: Sequence[float] = FP_RATES
) -> dict[str, Any]:
    net, config, _ = load_checkpoint(checkpoint)
    val = Pool.load(list(val_dirs)).select_channels(config.channels)
    if val.channel_filters != config.channel_filters:
        raise ValueError(
            f"{checkpoint} reads channels filtered {config.channel_filters}; the harvest in "
            f"{list(val_dirs)} has {val.channel_filters}"
        )
    rows = val.candidate_rows(config.candidate_threshold)
    n_truth, n_scans = int(val.n_truth.sum()), len(val.case_ids)
    scores = {
        "unet_alone": val.unet_probability[rows],
        "cascade": score(net, val.patches[rows], config.patch),
    }
    table = {
        name: {
            f"{fp:g}": round(recall_at_fp(s, val.label[rows], n_truth, n_scans, fp)[0], 4)
            for fp in fp_rates
        }
        for name, s in scores.items()
    }
    return {
        "scans": n_scans,
        "cmbs": n_truth,
        "candidates": int(rows.sum()),
        "recall_ceiling": round(float(val.label[rows].sum()) / max(n_truth, 1), 4),
        "recall_at_fp_per_scan": table,
    }
