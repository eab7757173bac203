"""Export the parcellation network to ONNX with its plan in ``metadata_props``.

The graph takes ``image`` ``[N, 1, D, H, W]`` (dynamic, multiples of 16) on
the canonical S/P/L grid at ``cmb.spacing_mm`` and returns ``probability``
``[N, C, D, H, W]`` (softmax inside the graph, ``cmb.output = "softmax"``);
``cmb.labels`` maps each channel, in order, to its FreeSurfer id.  Held-out
subjects and the synthesis recipe are recorded in the metadata.

    .venv/bin/python -m training.parcellation.export runs/parcellation/run1/checkpoint.pt \
        --out model/weights/parcellation.onnx
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from model.location.labels import LABELS
from model.onnx_model import ModelMetadata
from training.export import write_onnx
from training.parcellation.labelmaps import HELDOUT_SUBJECTS
from training.parcellation.network import ParcNetConfig, SoftmaxHead, build_parcellation_network
from training.parcellation.synth import NORMALIZATION


def parcellation_metadata(
    *,
    spacing_mm: float = 2.0,
    patch: int = 64,
    version: str = "0.1.0",
    metrics: dict[str, Any] | None = None,
    iterations: int | None = None,
    subjects: tuple[int, ...] = (),
) -> ModelMetadata:
    trained = {
        "data": "synthetic images from SynthSeg training label maps",
        "train_subjects": list(subjects),
        "heldout_subjects": list(HELDOUT_SUBJECTS),
        "iterations": iterations,
    }
    return ModelMetadata(
        name="cmb-parcellation",
        version=version,
        task="parcellation",
        spacing_mm=(spacing_mm, spacing_mm, spacing_mm),
        patch_size=(patch, patch, patch),
        normalization=dict(NORMALIZATION),
        output="softmax",
        threshold=0.5,
        labels={info.id: info.name for info in LABELS},
        metrics=metrics,
        trained_on=json.dumps(trained),
        description=(
            "Contrast-agnostic brain parcellation (SynthSeg labels), MONAI BasicUNet trained on "
            "synthetic images; input on the canonical S/P/L grid (model.location.grid)"
        ),
    )


def export_parcellation(net: torch.nn.Module, metadata: ModelMetadata, out: str | Path) -> Path:
    head = SoftmaxHead(net).eval()
    return write_onnx(
        head,
        metadata,
        out,
        example_size=(32, 32, 32),
        producer="cmb-detect training.parcellation.export",
    )


def export_checkpoint(checkpoint: Path, out: Path, metrics: dict[str, Any] | None = None) -> Path:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    meta = state.get("meta", {})
    network = meta.get("network", {})
    net_cfg = ParcNetConfig(
        features=tuple(network.get("features", ParcNetConfig().features)),
        n_labels=int(network.get("n_labels", ParcNetConfig().n_labels)),
    )
    net = build_parcellation_network(net_cfg)
    net.load_state_dict(state["model"])
    synth = meta.get("synth", {})
    md = parcellation_metadata(
        spacing_mm=float(meta.get("spacing_mm", 2.0)),
        patch=int(synth.get("patch", 64)),
        metrics=metrics,
        iterations=int(state.get("iteration", 0)),
        subjects=tuple(meta.get("subjects", ())),
    )
    return export_parcellation(net, md, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metrics", type=Path, help="JSON file of metrics to embed")
    a = p.parse_args(argv)
    metrics = json.loads(a.metrics.read_text()) if a.metrics else None
    print(export_checkpoint(a.checkpoint, a.out, metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
