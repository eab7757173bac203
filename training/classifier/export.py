"""Export a classifier checkpoint to ONNX, validated as a cascade with the U-Net.

The exported file carries the U-Net's plan (spacing and normalization: the
classifier's patches are cut from the same prepared volume; a harvest on
another grid, ``cmb classifier harvest --unet-spacing``, gives the file that
spacing and ``cmb.unet_spacing_mm``, the grid the cascade runs the U-Net on;
``--cube-spacing`` gives the file the cubes' own grid as its spacing), its own cube
size, the U-Net threshold its candidates are extracted at
(``cmb.candidate_threshold``) and the classifier threshold chosen on the
held-out set: the highest recall of the cascade at no more than
``max_fp_per_scan`` false positives per scan (``training.validate``, the
product's inference path on every validation case).

Several checkpoints export as one ensemble: the file's output is the mean of
their probabilities (:class:`MeanProbability`), so the runtime, the
test-time augmentation and the operating point treat it as one classifier.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from model.candidate_classifier import (
    CANDIDATE_THRESHOLD_KEY,
    TASK,
    TTA_KEY,
    TTA_MODES,
    UNET_KEY,
    UNET_SPACING_KEY,
    format_unet_spacing,
    identity_grid,
    unet_identity,
)
from model.errors import InputError
from model.onnx_model import ModelMetadata, OnnxModel, default_model_path
from training.classifier.train import ClassifierConfig, load_checkpoint
from training.export import set_metadata, write_onnx
from training.network import ProbabilityHead

DEFAULT_THRESHOLDS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)


class MeanProbability(torch.nn.Module):
    """Several logit networks -> the mean of their probabilities (an ensemble in one file)."""

    def __init__(self, nets: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        probabilities = [torch.sigmoid(net(image)) for net in self.nets]
        return torch.stack(probabilities).mean(dim=0)


def _load_members(
    checkpoints: Sequence[str | Path],
) -> tuple[torch.nn.Module, ClassifierConfig, list[dict[str, Any]]]:
    """(export head, the first member's config, every member's checkpoint).

    Members must cut the same cube from the same candidates (patch size and
    candidate threshold); their networks may differ.
    """
    if not checkpoints:
        raise InputError("no checkpoint to export")
    loaded = [load_checkpoint(c) for c in checkpoints]
    _, first, _ = loaded[0]
    for path, (_, config, _) in zip(checkpoints, loaded, strict=True):
        if _plan(config) != _plan(first):
            raise InputError(
                f"{path}: cube {config.patch} on grid {config.spacing_mm} (input filters "
                f"{config.channel_filters}), candidates at U-Net >= "
                f"{config.candidate_threshold} on grid {config.unet_grid()}; the first checkpoint "
                f"has {first.patch} on {first.spacing_mm} "
                f"({first.channel_filters}), {first.candidate_threshold} "
                f"on {first.unet_grid()}: an ensemble needs the same of all five"
            )
    states = [state for _, _, state in loaded]
    if len(loaded) == 1:
        return ProbabilityHead(loaded[0][0]), first, states
    return MeanProbability([net for net, _, _ in loaded]), first, states


def _plan(config: ClassifierConfig) -> tuple[Any, ...]:
    """What every member of an ensemble must share: the cube and the candidates it is cut at."""
    return (
        config.patch,
        config.candidate_threshold,
        config.spacing_mm,
        config.unet_grid(),
        config.channel_filters,
    )


def _metadata(
    config: ClassifierConfig,
    unet: OnnxModel,
    threshold: float,
    metrics: dict[str, Any] | None,
    trained_on: str | None,
    provenance: dict[str, Any],
    tta: str | None = None,
) -> ModelMetadata:
    plan = unet.metadata
    # the cubes' grid, and the U-Net's when the harvest ran it on another than its own
    # (the cascade then runs it there too)
    spacing = plan.spacing_mm
    if config.spacing_mm is not None:
        spacing = (config.spacing_mm[0], config.spacing_mm[1], config.spacing_mm[2])
    unet_grid = config.unet_grid() or plan.spacing_mm
    identity = unet_identity(unet, unet_grid)  # names the grid only where it is not the U-Net's
    grid: dict[str, str] = {}
    if identity_grid(identity) is not None:
        grid[UNET_SPACING_KEY] = format_unet_spacing(unet_grid)
    return ModelMetadata(
        name=config.name,
        version=config.version,
        task=TASK,
        spacing_mm=spacing,
        patch_size=(config.patch,) * 3,
        normalization=dict(plan.normalization),
        # the cubes' own filter, never the U-Net's (training.classifier.harvest)
        input_filter=dict(config.input_filter) if config.input_filter else None,
        extra_channels=tuple(dict(f) if f else None for f in config.extra_channels),
        output="sigmoid",
        threshold=float(threshold),
        labels={0: "not_cmb", 1: "cmb"},
        metrics=metrics,
        trained_on=trained_on,
        description="3D CNN that re-scores U-Net candidates (microbleed vs mimic)",
        extra={
            CANDIDATE_THRESHOLD_KEY: repr(float(config.candidate_threshold)),
            UNET_KEY: identity,
            **grid,
            **({TTA_KEY: tta} if tta is not None else {}),
            **{k: str(v) for k, v in provenance.items()},
        },
    )


def export_classifier(
    checkpoint: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    unet_path: str | Path | None = None,
    val_dirs: Sequence[str | Path] = (),
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    max_fp_per_scan: float = 0.5,
    overlap: float = 0.0,
    workers: int = 1,
    threads: int | None = None,
    predictions_dir: str | Path | None = None,
    metrics_json: str | Path | None = None,
    version: str | None = None,
    tta: str | None = None,
) -> Path:
    """Write the ONNX file; with ``val_dirs``, validate the cascade and embed the result.

    ``checkpoint``: one, or several for an ensemble (see the module docstring).
    ``version`` overrides the training config's model version (``cmb.version``);
    ``tta`` writes the test-time augmentation the product scores with
    (``cmb.tta``; default: none).
    """
    if tta is not None and tta not in TTA_MODES:
        raise InputError(f"cmb.{TTA_KEY} {tta!r} is not one of {TTA_MODES}")
    paths = [checkpoint] if isinstance(checkpoint, str | Path) else list(checkpoint)
    head, config, members = _load_members(paths)
    state = members[0]
    if version:
        config = dataclasses.replace(config, version=version)
    unet_file = Path(unet_path) if unet_path is not None else default_model_path()
    unet = OnnxModel.load(unet_file, device="cpu")
    provenance: dict[str, Any] = {
        "hardware": f"CPU {platform.machine()}, {config.threads} torch threads, "
        f"torch {torch.__version__}",
        "training_wall_s": state.get("training_wall_s"),
        "epoch": state.get("epoch"),
    }
    if len(members) > 1:
        provenance["epoch"] = None  # one per member, below
        provenance["training_wall_s"] = sum(m.get("training_wall_s") or 0.0 for m in members)
        provenance["ensemble"] = json.dumps(
            [
                {"checkpoint": str(p), "epoch": m.get("epoch"), "features": m["config"]["features"]}
                for p, m in zip(paths, members, strict=True)
            ]
        )
    provenance = {k: v for k, v in provenance.items() if v is not None}
    trained_on = f"{len(config.train)} harvest folder(s): {', '.join(config.train)}"
    chosen = float(state.get("threshold", 0.5))
    path = write_onnx(
        head,
        _metadata(config, unet, chosen, None, trained_on, provenance, tta),
        out,
        example_size=(config.patch,) * 3,
        channels=config.input_channels,
        producer="cmb-detect training.classifier",
    )
    val: dict[str, Any] = {}
    if val_dirs:
        from training.validate import validate_on_folders

        val = validate_on_folders(
            unet_file,
            val_dirs,
            thresholds,
            max_fp_per_scan=max_fp_per_scan,
            overlap=overlap,
            save_dir=predictions_dir,
            threads=threads,
            workers=workers,
            classifier_path=path,
        )
        chosen = float(val["threshold"])
        set_metadata(
            path, _metadata(config, unet, chosen, val["summary"], trained_on, provenance, tta)
        )
    report = Path(metrics_json) if metrics_json else path.with_suffix(".metrics.json")
    report.write_text(
        json.dumps(
            {
                "model": path.name,
                "unet": unet_file.name,
                "threshold": chosen,
                "candidate_threshold": config.candidate_threshold,
                "config": state["config"],
                "members": [m["config"] for m in members] if len(members) > 1 else None,
                "provenance": provenance,
                "validation": val,
            },
            indent=2,
            sort_keys=True,
        )
    )
    return path
