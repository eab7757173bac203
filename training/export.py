"""ONNX export with the model's plan embedded, and loading initial weights for fine-tuning.

The exported graph takes ``image`` ``[N, 1, D, H, W]`` (dynamic N and spatial
dims, each a multiple of 16) and returns ``probability`` ``[N, 1, D, H, W]``
(the sigmoid is inside the graph, ``cmb.output = "sigmoid"``).  Its
``metadata_props`` are written with ``model.onnx_model.ModelMetadata`` (the
runtime's own parser), so what we write is what the service reads.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from model.errors import ModelError
from model.onnx_model import ModelMetadata
from model.paths import WEIGHTS_DIR
from training.config import TrainConfig, config_from_dict
from training.network import ProbabilityHead, build_network

log = logging.getLogger(__name__)

OPSET = 17
LABELS = {0: "background", 1: "cmb"}
#: A config without ``normalization`` trains (and exports) under this one: the shipped
#: models' (the ``head`` mask keeps dark white matter and its CMBs above the lower clip,
#: docs/training.md, "The normalization mask"), so that fine-tuning from them with such
#: a config keeps the scale their weights were trained on.
DEFAULT_NORMALIZATION: dict[str, Any] = {
    "method": "percentile_zscore",
    "lower": 0.5,
    "upper": 99.5,
    "mask": "head",
}


def normalization_of(config: TrainConfig) -> dict[str, Any]:
    return dict(config.normalization) if config.normalization else dict(DEFAULT_NORMALIZATION)


def build_metadata(
    config: TrainConfig,
    *,
    threshold: float = 0.5,
    metrics: dict[str, Any] | None = None,
    training_data_hash: str | None = None,
    trained_on: str | None = None,
    provenance: dict[str, Any] | None = None,
) -> ModelMetadata:
    """The plan of a model trained with ``config`` (validated by the runtime's own class)."""
    return ModelMetadata(
        name=config.name,
        version=config.version,
        task="cmb_segmentation",
        spacing_mm=(
            float(config.spacing_mm[0]),
            float(config.spacing_mm[1]),
            float(config.spacing_mm[2]),
        ),
        patch_size=(
            int(config.patch_size[0]),
            int(config.patch_size[1]),
            int(config.patch_size[2]),
        ),
        normalization=normalization_of(config),
        input_filter=dict(config.input_filter) if config.input_filter else None,
        output="sigmoid",
        threshold=float(threshold),
        labels=dict(LABELS),
        training_data_hash=training_data_hash,
        config_hash=config.config_hash(),
        metrics=metrics,
        trained_on=trained_on,
        description="3D U-Net (MONAI BasicUNet) for cerebral microbleed segmentation",
        # kept by the runtime as extra cmb.* keys: hardware, wall time, epochs
        extra={k: str(v) for k, v in (provenance or {}).items() if v is not None},
    )


def export_onnx(net: torch.nn.Module, metadata: ModelMetadata, out: str | Path) -> Path:
    """Write ``net`` (logits) + sigmoid as ONNX with ``metadata`` in ``metadata_props``."""
    head = ProbabilityHead(net).to("cpu").eval()
    return write_onnx(
        head,
        metadata,
        out,
        example_size=tuple(metadata.patch_size),
        producer="cmb-detect training.export",
    )


def write_onnx(
    head: torch.nn.Module,
    metadata: ModelMetadata,
    out: str | Path,
    *,
    example_size: Sequence[int],
    producer: str,
    channels: int = 1,
) -> Path:
    """Trace ``head`` (image -> probability) to ONNX with dynamic batch and spatial axes.

    The model's plan (``metadata``) goes into ``metadata_props``; the file is
    checked with ``onnx.checker`` and replaced atomically.  Shared by the CMB,
    the parcellation and the classifier exports (``channels``: the input's, which
    only a classifier with extra channels has more than one of).
    """
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros((1, channels, *example_size), dtype=torch.float32)
    dynamic = {0: "batch", 2: "depth", 3: "height", 4: "width"}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        with torch.no_grad():
            torch.onnx.export(
                head,
                (dummy,),
                str(raw),
                dynamo=False,
                input_names=["image"],
                output_names=["probability"],
                dynamic_axes={"image": dynamic, "probability": dynamic},
                opset_version=OPSET,
                do_constant_folding=True,
            )
        proto = onnx.load(str(raw))
    del proto.metadata_props[:]
    for key, value in metadata.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = producer
    onnx.checker.check_model(proto)
    tmp_out = out_path.with_suffix(out_path.suffix + ".tmp")
    onnx.save(proto, str(tmp_out))
    tmp_out.replace(out_path)
    return out_path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint {p} does not exist")
    try:
        ckpt = torch.load(str(p), map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several unrelated types for a bad file
        raise ModelError(f"{p} is not a readable training checkpoint: {e}") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ModelError(f"{p} is not a cmb training checkpoint (no 'model'/'config')")
    return ckpt


def set_metadata(path: str | Path, metadata: ModelMetadata) -> None:
    """Replace the ``metadata_props`` of an ONNX file in place (weights untouched)."""
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    tmp = Path(str(path) + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    threshold: float | None = None,
    metrics_json: str | Path | None = None,
    val_dirs: Sequence[str | Path] = (),
    overlap: float | None = None,
    predictions_dir: str | Path | None = None,
    threads: int | None = None,
    workers: int = 1,
    thresholds: Sequence[float] | None = None,
    max_fp_per_scan: float | None = None,
) -> Path:
    """Export a training checkpoint with the threshold and metrics chosen on validation.

    Without ``val_dirs`` the threshold and metrics are those the training run
    stored with the checkpoint.  With ``val_dirs`` the exported file itself is
    validated on those folders (``training.validate``, the product's inference
    path) and the threshold chosen there and its metrics are embedded.  An
    explicit ``threshold`` overrides the chosen one; ``max_fp_per_scan``
    (default: the config's ``val.max_fp_per_scan``) is the false-positive
    budget of that choice, which may differ from the one that selected the
    training epoch (a candidate generator's, say).  A JSON report goes to
    ``metrics_json`` (default ``<out>.metrics.json``); with ``predictions_dir`` the
    validation candidates are kept there as ``<case_id>/detections.json`` for
    ``cmb evaluate``.
    """
    ckpt = load_checkpoint(checkpoint)
    config = config_from_dict(ckpt["config"])
    net = build_network(config.network)
    net.load_state_dict(ckpt["model"])
    val = ckpt.get("validation") or {}

    def metadata(th: float, summary: dict[str, Any] | None) -> ModelMetadata:
        return build_metadata(
            config,
            threshold=th,
            metrics=summary,
            training_data_hash=ckpt.get("training_data_hash"),
            trained_on=ckpt.get("trained_on"),
            provenance=ckpt.get("provenance"),
        )

    chosen = float(threshold if threshold is not None else val.get("threshold", 0.5))
    path = export_onnx(net, metadata(chosen, val.get("summary")), out)
    if val_dirs:
        from training.validate import validate_on_folders

        val = validate_on_folders(
            path,
            val_dirs,
            tuple(thresholds) if thresholds else config.val.thresholds,
            max_fp_per_scan=(
                config.val.max_fp_per_scan if max_fp_per_scan is None else max_fp_per_scan
            ),
            overlap=config.val.overlap if overlap is None else overlap,
            save_dir=predictions_dir,
            threads=threads,
            workers=workers,
        )
        chosen = float(threshold if threshold is not None else val["threshold"])
        set_metadata(path, metadata(chosen, val["summary"]))
    report = Path(metrics_json) if metrics_json else path.with_suffix(".metrics.json")
    report.write_text(
        json.dumps(
            {
                "model": path.name,
                "checkpoint_epoch": ckpt.get("epoch"),
                "threshold": chosen,
                "config_hash": config.config_hash(),
                "training_data_hash": ckpt.get("training_data_hash"),
                "trained_on": ckpt.get("trained_on"),
                "provenance": ckpt.get("provenance"),
                "validation": val,
            },
            indent=2,
            sort_keys=True,
        )
    )
    return path


def resolve_init(source: str) -> Path:
    """A checkpoint/ONNX path, or the name of a model in model/weights (``cmb_unet``)."""
    p = Path(source)
    if p.is_file():
        return p
    for candidate in (WEIGHTS_DIR / source, WEIGHTS_DIR / f"{source}.onnx"):
        if candidate.is_file():
            return candidate
    raise ModelError(f"--init {source}: no such checkpoint, ONNX file or model in {WEIGHTS_DIR}")


_PARAM_INPUTS = {
    "Conv": ("weight", "bias"),
    "ConvTranspose": ("weight", "bias"),
    "InstanceNormalization": ("weight", "bias"),
}


def _onnx_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Parameters of an exported model, keyed by torch name.

    The exporter deduplicates equal initializers (e.g. untouched norm scales) behind
    Identity nodes, so names are also recovered from the consuming node
    (``/net/<module path>/<Op>``), not from the initializer names alone.
    """
    proto = onnx.load(str(path))
    arrays = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for node in proto.graph.node:  # deduplicated initializers reappear through Identity
        if node.op_type == "Identity" and node.input[0] in arrays:
            arrays[node.output[0]] = arrays[node.input[0]]
    state: dict[str, torch.Tensor] = {}
    for name, arr in arrays.items():
        key = name[4:] if name.startswith("net.") else name
        state[key] = torch.from_numpy(np.array(arr))
    for node in proto.graph.node:
        params = _PARAM_INPUTS.get(node.op_type)
        parts = node.name.strip("/").split("/")
        if not params or len(parts) < 3 or parts[0] != "net":
            continue
        module = ".".join(parts[1:-1])
        for param, inp in zip(params, node.input[1:], strict=False):
            if inp in arrays:
                state[f"{module}.{param}"] = torch.from_numpy(np.array(arrays[inp]))
    return state


def load_init_weights(net: torch.nn.Module, source: str | Path) -> Path:
    """Initialise ``net`` from a training checkpoint (.pt) or an exported ONNX model.

    ONNX initializers keep the torch parameter names (``net.<name>`` under the
    export wrapper); every parameter and buffer of ``net`` must be found, with the
    same shape, or ModelError says which is missing (a different architecture).
    """
    path = resolve_init(str(source))
    state = _onnx_state_dict(path) if path.suffix == ".onnx" else load_checkpoint(path)["model"]
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        raise ModelError(
            f"--init {path}: weights do not fit this network "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"shape mismatch {wrong[:3]}); use the same network config as the source"
        )
    net.load_state_dict({k: state[k] for k in own})
    return path
