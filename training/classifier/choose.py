"""Choose a classifier checkpoint by the product path on a selection set.

The trainer's per-epoch check (:func:`training.classifier.train.evaluate`)
scores one view of each harvested candidate, without the location filter.
Twice it preferred an epoch that the product path did not (classifiers 0.3.0
and 0.4.0, docs/model-card.md).  Here each checkpoint is exported, the
selection set's cached U-Net candidates (``filter_effect --cache``) are
scored as the product scores them (with the test-time augmentation it ships
with), located and filtered (:func:`training.parcellation.filter_effect.replay`),
and the export rule picks each checkpoint's operating point.  The checkpoint
with the highest recall at that point wins; ties go to fewer false positives,
then to the later epoch.

Cost: one replay of the selection set per checkpoint (1-2 min for 30 scans
on a 2-core CPU, docs/training.md), so keep every few epochs
(``--keep-every``), not all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from model.candidate_classifier import TTA_MODES, UNET_KEY, unet_identity
from model.errors import InputError
from model.onnx_model import OnnxModel, default_model_path
from training.classifier.export import export_classifier
from training.classifier.train import load_checkpoint
from training.parcellation.filter_effect import (
    MAX_FP_PER_SCAN,
    load_outputs,
    operating_point,
    replay,
)


@dataclass(frozen=True)
class CheckpointScore:
    """One checkpoint's product path on the selection set, at its own operating point."""

    checkpoint: str
    epoch: int | None
    threshold: float
    tp: int
    fp: int
    recall: float
    recall_large: float
    fp_per_scan: float
    precision: float

    def rank(self) -> tuple[float, int, int]:
        """Larger is better: recall, then fewer false positives, then the later epoch."""
        return (self.recall, -self.fp, self.epoch or 0)


def best(scores: Sequence[CheckpointScore]) -> CheckpointScore:
    if not scores:
        raise InputError("no checkpoint to choose from")
    return max(scores, key=CheckpointScore.rank)


def cached_unet(cache: Path) -> str:
    """The U-Net that made the candidates of a ``filter_effect --cache`` folder."""
    files = sorted(cache.glob("*.pkl"))
    if not files:
        raise InputError(f"no cached network outputs (*.pkl) in {cache}")
    return load_outputs(files[0]).unet


def _check_cache(cache: Path, measured: str, identity: str, *, whole: bool) -> None:
    """InputError unless the cache's candidates come from ``identity`` (``whole``: on its grid
    too; otherwise only the U-Net file is compared).  A cache that does not say passes."""
    same = measured == identity if whole else measured.startswith(identity)
    if measured and not same:
        raise InputError(
            f"the cached candidates in {cache} come from {measured}, not from {identity}: "
            "pass that U-Net with --unet or cache its candidates (filter_effect --cache, "
            "--unet-spacing for another grid)"
        )


def _grid(checkpoint: Path) -> tuple[float, ...] | None:
    """The grid the U-Net ran on for a checkpoint's harvest (None: the U-Net's own)."""
    _, config, _ = load_checkpoint(checkpoint)
    return config.unet_grid()


def score_checkpoint(
    checkpoint: Path,
    *,
    data: Path,
    cache: Path,
    out: Path,
    unet_path: Path,
    tta: str,
    max_fp_per_scan: float = MAX_FP_PER_SCAN,
) -> CheckpointScore:
    """Export ``checkpoint`` to ``out/<name>.onnx`` and score it on the cached selection set."""
    onnx_path = export_classifier(
        checkpoint, out / f"{checkpoint.stem}.onnx", unet_path=unet_path, tta=tta
    )
    model = OnnxModel.load(onnx_path, device="cpu", threads=1)
    summary = replay(data, cache, out / checkpoint.stem, classifier=model)
    threshold = operating_point(summary, max_fp_per_scan=max_fp_per_scan)
    row = summary["by_configuration"]["defaults"][f"{threshold:g}"]
    epoch = model.metadata.extra.get("epoch")
    return CheckpointScore(
        checkpoint=str(checkpoint),
        epoch=int(epoch) if epoch is not None else None,
        threshold=threshold,
        tp=int(row["tp"]),
        fp=int(row["fp"]),
        recall=float(row["recall"]),
        recall_large=float(row["recall_large"]),
        fp_per_scan=float(row["fp_per_scan"]),
        precision=float(row["precision"]),
    )


def choose(
    checkpoints: Sequence[Path],
    *,
    data: Path,
    cache: Path,
    out: Path,
    unet_path: Path | None = None,
    tta: str = "flips_inplane_swap",
    max_fp_per_scan: float = MAX_FP_PER_SCAN,
) -> dict[str, Any]:
    """Score every checkpoint (see the module docstring); ``out/choice.json`` says which won.

    The cache must hold the candidates of the U-Net the classifier is
    exported for (``unet_path``, default: the shipped one): checked before
    anything runs.
    """
    if tta not in TTA_MODES:
        raise InputError(f"--tta {tta!r} is not one of {TTA_MODES}")
    if not checkpoints:
        raise InputError("no checkpoint to choose from")
    unet_file = unet_path or default_model_path()
    unet = OnnxModel.load(unet_file, device="cpu")
    measured = cached_unet(cache)
    _check_cache(cache, measured, unet_identity(unet), whole=False)  # before reading checkpoints
    grids = {_grid(Path(c)) for c in checkpoints}
    if len(grids) > 1:
        raise InputError(f"the checkpoints were trained behind several U-Net grids: {grids}")
    identity = unet_identity(unet, grids.pop())
    _check_cache(cache, measured, identity, whole=True)
    out.mkdir(parents=True, exist_ok=True)
    scores = [
        score_checkpoint(
            Path(c),
            data=data,
            cache=cache,
            out=out,
            unet_path=Path(unet_file),
            tta=tta,
            max_fp_per_scan=max_fp_per_scan,
        )
        for c in checkpoints
    ]
    chosen = best(scores)
    result = {
        "selection": str(data),
        "cache": str(cache),
        UNET_KEY: identity,
        "tta": tta,
        "max_fp_per_scan": max_fp_per_scan,
        "rule": "highest recall at the export rule's operating point; ties: fewer FPs, "
        "then the later epoch",
        "checkpoints": [asdict(s) for s in scores],
        "chosen": asdict(chosen),
    }
    (out / "choice.json").write_text(json.dumps(result, indent=1))
    return result


def table(result: dict[str, Any]) -> str:
    """Markdown: each checkpoint's operating point, the chosen one in bold."""
    chosen = result["chosen"]["checkpoint"]
    lines = [
        "| checkpoint | epoch | threshold | TP, FP | recall (≥ 3 mm) | FP/scan | precision |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in result["checkpoints"]:
        mark = "**" if s["checkpoint"] == chosen else ""
        lines.append(
            f"| {mark}{Path(s['checkpoint']).name}{mark} | {s['epoch']} | {s['threshold']:g} | "
            f"{s['tp']}, {s['fp']} | {s['recall']:.3f} ({s['recall_large']:.3f}) | "
            f"{s['fp_per_scan']:.2f} | {s['precision']:.2f} |"
        )
    return "\n".join(lines)
