"""Loading ONNX models: metadata contract, provider selection, running."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from model import onnx_model
from model.errors import ModelError
from model.onnx_model import REQUIRED_KEYS, ModelMetadata, OnnxModel, default_model_path
from tests.helpers.onnx_factory import expected_probability, make_test_model

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_model(tmp_path_factory.mktemp("m") / "blob.onnx", spacing_mm=(2.0, 1.0, 0.5))


def test_load_reads_metadata_and_identity(model_path: Path) -> None:
    model = OnnxModel.load(model_path, device="cpu", threads=1)
    md = model.metadata
    assert md.task == "cmb_segmentation"
    assert md.spacing_mm == (2.0, 1.0, 0.5)
    assert md.patch_size == (32, 32, 32)
    assert md.normalization["method"] == "percentile_zscore"
    assert md.output == "sigmoid"
    assert md.threshold == 0.5
    assert md.labels == {0: "background", 1: "cmb"}
    assert model.info.name == "test-dark-blob"
    assert model.info.version == "0.0.0-test"
    assert model.info.sha256 == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert model.providers == ["CPUExecutionProvider"]


def test_props_round_trip(model_path: Path) -> None:
    md = OnnxModel.load(model_path).metadata
    again = ModelMetadata.from_props(md.to_props())
    assert again == md
    extended = ModelMetadata.from_props(
        {**md.to_props(), "cmb.metrics": '{"sensitivity": 0.9}', "cmb.trained_on": "synth-v1"}
    )
    assert extended.metrics == {"sensitivity": 0.9}
    assert extended.trained_on == "synth-v1"
    assert ModelMetadata.from_props(extended.to_props()) == extended


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_missing_key_is_refused_by_name(tmp_path: Path, key: str) -> None:
    path = make_test_model(tmp_path / "m.onnx", drop_keys=(f"cmb.{key}",))
    with pytest.raises(ModelError, match=rf"cmb\.{key}"):
        OnnxModel.load(path)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("spacing_mm", "[1.0, 1.0"),  # not JSON
        ("spacing_mm", "[1.0, 1.0]"),  # 2 values
        ("spacing_mm", "[1.0, -1.0, 1.0]"),
        ("patch_size", "[32, 32.5, 32]"),
        ("patch_size", '"32"'),
        ("normalization", "{bad json"),
        ("normalization", '{"method": "histogram_magic"}'),
        ("normalization", '{"method": "percentile_zscore", "lower": 0.5}'),
        ("normalization", '{"method": "zscore", "mask": "brain"}'),
        ("normalization", '{"method": "percentile_minmax", "lower": 90, "upper": 10}'),
        ("labels", '["background", "cmb"]'),
        ("labels", '{"bg": "background"}'),
        ("labels", "{}"),
        ("task", "classification"),
        ("output", "probability"),
        ("threshold", "high"),
        ("threshold", "1.5"),
        ("format_version", "2"),
        ("metrics", "[1, 2]"),
        ("name", ""),
    ],
)
def test_invalid_value_is_refused_by_name(tmp_path: Path, key: str, value: str) -> None:
    path = make_test_model(tmp_path / "m.onnx", metadata={f"cmb.{key}": value})
    with pytest.raises(ModelError, match=rf"cmb\.{key}"):
        OnnxModel.load(path)


def test_not_an_onnx_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fake.onnx"
    path.write_bytes(b"this is not a protobuf at all \x00\xff" * 10)
    with pytest.raises(ModelError, match=r"fake\.onnx"):
        OnnxModel.load(path)
    with pytest.raises(ModelError, match="does not exist"):
        OnnxModel.load(tmp_path / "absent.onnx")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_cuda_requested_without_cuda_is_refused(model_path: Path) -> None:
    with pytest.raises(ModelError, match="cuda"):
        OnnxModel.load(model_path, device="cuda")


@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu and a GPU")
def test_cuda_requested_with_cuda(model_path: Path) -> None:
    model = OnnxModel.load(model_path, device="cuda")
    assert model.providers[0] == "CUDAExecutionProvider"
    assert model.uses_cuda


def test_auto_picks_cuda_only_when_present(model_path: Path) -> None:
    model = OnnxModel.load(model_path, device="auto")
    assert model.uses_cuda == HAS_CUDA
    assert model.providers[-1] == "CPUExecutionProvider"


def test_bad_device_and_threads_are_refused(model_path: Path) -> None:
    with pytest.raises(ModelError, match="device"):
        OnnxModel.load(model_path, device="tpu")
    with pytest.raises(ModelError, match="threads"):
        OnnxModel.load(model_path, threads=0)


def test_default_model_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_model, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ModelError, match=r"cmb_unet\.onnx"):
        default_model_path()
    with pytest.raises(ModelError, match=r"parcellation\.onnx"):
        default_model_path("parcellation")
    with pytest.raises(ModelError, match="unknown model task"):
        default_model_path("other")
    make_test_model(tmp_path / "cmb_unet.onnx")
    assert default_model_path() == tmp_path / "cmb_unet.onnx"
    assert OnnxModel.load().path == tmp_path / "cmb_unet.onnx"


@pytest.mark.parametrize("output", ["sigmoid", "softmax", "logits"])
def test_run_returns_probabilities_for_every_output_kind(tmp_path: Path, output: str) -> None:
    model = OnnxModel.load(make_test_model(tmp_path / "m.onnx", output=output))
    x = np.random.default_rng(1).normal(0, 1, (2, 1, 12, 14, 16)).astype(np.float32)
    y = model.run(x)
    assert y.dtype == np.float32
    assert y.shape == (2, 2 if output == "softmax" else 1, 12, 14, 16)
    for n in range(2):
        np.testing.assert_allclose(y[n, -1], expected_probability(x[n, 0]), atol=1e-5)
    if output == "softmax":
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)


def test_run_refuses_wrong_input_shape(model_path: Path) -> None:
    model = OnnxModel.load(model_path)
    with pytest.raises(ValueError, match=r"\[N, 1, D, H, W\]"):
        model.run(np.zeros((1, 2, 8, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\[N, 1, D, H, W\]"):
        model.run(np.zeros((8, 8, 8), np.float32))


def test_load_cached_reuses_a_model_until_its_file_is_replaced(tmp_path: Path) -> None:
    """Installing new weights under the same name must not leave a worker on the old network."""
    import os

    from model.onnx_model import load_cached

    path = make_test_model(tmp_path / "m.onnx", output="sigmoid")
    first = load_cached(path, device="cpu", threads=1)
    assert load_cached(path, device="cpu", threads=1) is first
    assert load_cached(path, device="cpu", threads=2) is not first
    replacement = make_test_model(tmp_path / "new.onnx", output="logits")
    os.replace(replacement, path)
    reloaded = load_cached(path, device="cpu", threads=1)
    assert reloaded is not first
    assert reloaded.metadata.output == "logits"
    assert reloaded.info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ModelError, match="does not exist"):
        load_cached(tmp_path / "missing.onnx", device="cpu")
