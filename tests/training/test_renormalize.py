"""training.renormalize: another normalization mask, the same weights, a new version."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from model.onnx_model import OnnxModel
from tests.helpers.onnx_factory import make_test_model
from tests.helpers.tiny_cmb_layout import write_tiny_layout
from training.renormalize import SOURCE_KEY, main, renormalize

OTSU = {"method": "percentile_zscore", "lower": 0.5, "upper": 99.5, "mask": "otsu"}


def _weights(path: Path) -> dict[str, bytes]:
    return {
        t.name: numpy_helper.to_array(t).tobytes() for t in onnx.load(str(path)).graph.initializer
    }


def test_renormalized_file_keeps_the_weights_and_names_its_source(tmp_path: Path) -> None:
    src = make_test_model(tmp_path / "src.onnx", normalization=OTSU, version="1.0.0")
    out = tmp_path / "out.onnx"
    report = renormalize(src, out, "head", "1.0.1")
    new, old = OnnxModel.load(out), OnnxModel.load(src)
    assert new.metadata.normalization == {**OTSU, "mask": "head"}
    assert new.metadata.version == "1.0.1"
    assert new.metadata.threshold == old.metadata.threshold
    assert new.metadata.metrics is None
    assert "not revalidated" in (new.metadata.description or "")
    assert f"sha256:{old.info.sha256}" in new.metadata.extra[SOURCE_KEY]
    assert "otsu -> head" in report["renormalized_from"]
    assert _weights(out) == _weights(src)
    assert OnnxModel.load(src).metadata.normalization == OTSU  # the source is untouched


@pytest.mark.parametrize(
    ("mask", "version", "message"),
    [("otsu", "1.0.1", "already"), ("head", "1.0.0", "another version")],
)
def test_a_renormalization_that_changes_nothing_is_refused(
    tmp_path: Path, mask: str, version: str, message: str
) -> None:
    src = make_test_model(tmp_path / "src.onnx", normalization=OTSU, version="1.0.0")
    with pytest.raises(ValueError, match=message):
        renormalize(src, tmp_path / "out.onnx", mask, version)
    with pytest.raises(ValueError, match="another file"):
        renormalize(src, src, "head", "1.0.1")


def test_a_classifier_is_not_validated_as_a_segmentation_model(tmp_path: Path) -> None:
    src = make_test_model(
        tmp_path / "clf.onnx",
        normalization=OTSU,
        task="cmb_candidate_classification",
        metadata={"cmb.candidate_threshold": "0.3"},
    )
    with pytest.raises(ValueError, match="set-threshold"):
        renormalize(src, tmp_path / "out.onnx", "head", "2.0.0", val_dirs=[tmp_path])


def test_validation_data_measure_the_new_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {"method": "percentile_zscore", "lower": 0.0, "upper": 99.9, "mask": "all"}
    src = make_test_model(tmp_path / "src.onnx", normalization=spec, version="1.0.0")
    val = write_tiny_layout(tmp_path / "val", 2, split="val")
    out = tmp_path / "new" / "m.onnx"
    argv = [str(src), "--out", str(out), "--mask", "nonzero", "--version", "1.1.0"]
    assert main([*argv, "--val-data", str(val), "--thresholds", "0.3", "0.5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    new = OnnxModel.load(out)
    assert new.metadata.metrics is not None and "recall" in json.dumps(new.metadata.metrics)
    assert new.metadata.threshold == printed["threshold"] in (0.3, 0.5)
    saved = json.loads(out.with_suffix(".metrics.json").read_text())
    assert saved["validation"]["data"] == [str(val)]
    assert saved["validation"]["summary"] == new.metadata.metrics
