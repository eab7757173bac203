"""ONNX export: torch and ONNX Runtime agree, metadata is embedded and enforced, --init loads it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from model.errors import ModelError
from model.onnx_model import ModelMetadata, OnnxModel
from training.config import TrainConfig
from training.export import (
    build_metadata,
    export_checkpoint,
    export_onnx,
    load_init_weights,
    set_metadata,
)
from training.network import NetworkConfig, build_network

TINY = TrainConfig(network=NetworkConfig(features=(4, 4, 8, 8, 16, 4)), patch_size=(32, 32, 32))


def _perturbed_net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_network(TINY.network).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def test_onnx_runtime_and_torch_agree_on_random_input_of_other_sizes(tmp_path) -> None:
    net = _perturbed_net()
    path = export_onnx(net, build_metadata(TINY, threshold=0.6), tmp_path / "m.onnx")
    model = OnnxModel.load(path, device="cpu")
    for shape in [(1, 1, 32, 32, 32), (2, 1, 48, 32, 64)]:
        x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
        with torch.no_grad():
            expected = torch.sigmoid(net(torch.from_numpy(x))).numpy()
        got = model.run(x)
        assert got.shape == expected.shape
        assert float(np.abs(got - expected).max()) <= 1e-4


def test_metadata_is_embedded_and_read_back_by_the_runtime(tmp_path) -> None:
    metrics = {"recall": 0.5, "fp_per_scan": 0.4}
    meta = build_metadata(TINY, threshold=0.7, metrics=metrics, training_data_hash="abc")
    path = export_onnx(_perturbed_net(), meta, tmp_path / "m.onnx")
    loaded = OnnxModel.load(path, device="cpu").metadata
    assert loaded.task == "cmb_segmentation"
    assert loaded.output == "sigmoid"
    assert loaded.spacing_mm == TINY.spacing_mm
    assert loaded.patch_size == (32, 32, 32)
    assert loaded.threshold == 0.7
    assert loaded.metrics == metrics
    assert loaded.labels == {0: "background", 1: "cmb"}
    assert loaded.config_hash == TINY.config_hash()
    assert loaded.training_data_hash == "abc"
    assert loaded.normalization["method"] == "percentile_zscore"
    inputs = onnx.load(str(path)).graph.input
    dims = [d.dim_param or d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    assert inputs[0].name == "image"
    assert dims[1] == 1
    assert all(isinstance(d, str) for d in (dims[0], *dims[2:]))  # dynamic N and spatial dims


def test_a_config_without_normalization_trains_under_the_shipped_models_plan() -> None:
    """Fine-tuning from the shipped U-Net with a config that names no normalization keeps
    the scale its weights were trained on."""
    from model.onnx_model import default_model_path

    assert TINY.normalization is None
    shipped = OnnxModel.load(default_model_path("cmb_segmentation"), device="cpu").metadata
    assert build_metadata(TINY).normalization == shipped.normalization
    own = {"method": "zscore", "mask": "otsu"}
    config = TrainConfig(network=TINY.network, patch_size=(32, 32, 32), normalization=own)
    assert build_metadata(config).normalization == own


def test_runtime_refuses_the_file_without_metadata(tmp_path) -> None:
    path = export_onnx(_perturbed_net(), build_metadata(TINY), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ModelError, match="lacks the required key"):
        OnnxModel.load(bare, device="cpu")


def test_set_metadata_replaces_the_plan_without_touching_weights(tmp_path) -> None:
    net = _perturbed_net()
    path = export_onnx(net, build_metadata(TINY, threshold=0.5), tmp_path / "m.onnx")
    before = OnnxModel.load(path, device="cpu").run(np.ones((1, 1, 32, 32, 32), np.float32))
    set_metadata(path, build_metadata(TINY, threshold=0.8))
    model = OnnxModel.load(path, device="cpu")
    assert model.metadata.threshold == 0.8
    np.testing.assert_array_equal(model.run(np.ones((1, 1, 32, 32, 32), np.float32)), before)


@pytest.mark.parametrize("untouched", [False, True])
def test_init_from_onnx_restores_the_exported_weights(tmp_path, untouched: bool) -> None:
    net = build_network(TINY.network).eval() if untouched else _perturbed_net()
    path = export_onnx(net, build_metadata(TINY), tmp_path / "m.onnx")
    fresh = build_network(TINY.network).eval()
    load_init_weights(fresh, path)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), net(x))


def test_init_refuses_weights_of_another_architecture(tmp_path) -> None:
    path = export_onnx(_perturbed_net(), build_metadata(TINY), tmp_path / "m.onnx")
    other = build_network(NetworkConfig(features=(8, 8, 16, 16, 32, 8)))
    with pytest.raises(ModelError, match="do not fit"):
        load_init_weights(other, path)
    with pytest.raises(ModelError, match="no such checkpoint"):
        load_init_weights(other, str(tmp_path / "missing.pt"))


def test_export_checkpoint_uses_the_validation_threshold_and_writes_a_report(tmp_path) -> None:
    net = _perturbed_net()
    validation = {"threshold": 0.65, "summary": {"recall": 0.4, "fp_per_scan": 0.3}}
    ckpt = tmp_path / "best.pt"
    torch.save(
        {
            "model": net.state_dict(),
            "config": TINY.to_dict(),
            "epoch": 3,
            "validation": validation,
            "training_data_hash": "h",
        },
        ckpt,
    )
    out = export_checkpoint(ckpt, tmp_path / "cmb_unet.onnx")
    meta: ModelMetadata = OnnxModel.load(out, device="cpu").metadata
    assert meta.threshold == 0.65
    assert meta.metrics == validation["summary"]
    report = (tmp_path / "cmb_unet.metrics.json").read_text()
    assert '"checkpoint_epoch": 3' in report
    torch.save({"weights": 1}, tmp_path / "x.pt")
    with pytest.raises(ModelError, match="not a cmb training checkpoint"):
        export_checkpoint(tmp_path / "x.pt", tmp_path / "y.onnx")


def test_a_declared_input_filter_travels_from_config_to_the_runtime(tmp_path) -> None:
    minimum = {"method": "inplane_minimum"}
    config = TINY.replace(input_filter=minimum)
    path = export_onnx(_perturbed_net(), build_metadata(config), tmp_path / "m.onnx")
    assert OnnxModel.load(path, device="cpu").metadata.input_filter == minimum
    plain = export_onnx(_perturbed_net(), build_metadata(TINY), tmp_path / "p.onnx")
    assert OnnxModel.load(plain, device="cpu").metadata.input_filter is None
    # a config without the key hashes as every config written before it did
    assert "input_filter" not in TINY.to_dict()
    assert config.to_dict()["input_filter"] == minimum
    assert config.config_hash() != TINY.config_hash()
    with pytest.raises(ValueError, match="unknown input filter"):
        TINY.replace(input_filter={"method": "median"})
