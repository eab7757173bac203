"""The classifier's operating point and the U-Net it belongs to (``cmb.unet``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.candidate_classifier import TASK, paired_with, unet_identity
from model.errors import InputError
from model.onnx_model import OnnxModel
from model.pipeline import PipelineOptions, load_classifier
from tests.helpers.onnx_factory import make_test_model
from training.classifier.operating_point import held_out_metrics, set_operating_point

ROW = {
    "tp": 4,
    "fp": 1,
    "recall": 0.6667,
    "recall_large": 0.5,
    "precision": 0.8,
    "f1": 0.7273,
    "fp_per_scan": 0.3333,
    "scan_sensitivity": 1.0,
    "scan_specificity": 1.0,
}


def _summary(unet: OnnxModel | None) -> dict[str, object]:
    """A filter_effect.json measured behind ``unet`` (None: written before it was recorded)."""
    summary: dict[str, object] = {"n_cases": 3, "n_truth": 6, "n_truth_large": 2}
    if unet is not None:
        summary["unet"] = unet_identity(unet)
    return summary | {"by_configuration": {"defaults": {"0.9": ROW}}}


@pytest.fixture
def unets(tmp_path: Path) -> tuple[OnnxModel, OnnxModel, OnnxModel]:
    """Three U-Net files that differ (so do their SHA-256)."""
    return tuple(  # type: ignore[return-value]
        OnnxModel.load(make_test_model(tmp_path / f"u{v}.onnx", version=f"0.{v}"), device="cpu")
        for v in range(3)
    )


def _classifier(path: Path, unet: OnnxModel) -> Path:
    meta = {"cmb.candidate_threshold": "0.3", "cmb.unet": unet_identity(unet)}
    return make_test_model(path, task=TASK, patch_size=(24, 24, 24), metadata=meta)


def test_metrics_measured_behind_another_unet_are_refused(tmp_path: Path, unets) -> None:
    first, second, _ = unets
    path = _classifier(tmp_path / "c.onnx", first)
    behind_second = held_out_metrics(_summary(second), 0.9)
    with pytest.raises(InputError, match=r"measured behind .* pass that U-Net with --unet"):
        set_operating_point(path, 0.9, behind_second, selected_on="s")
    with pytest.raises(InputError, match=r"not test-dark-blob 0\.0"):
        set_operating_point(path, 0.9, behind_second, selected_on="s", unet=first)
    assert OnnxModel.load(path, device="cpu").metadata.threshold == 0.5  # untouched


def test_a_measured_pair_re_pairs_the_classifier_and_keeps_its_training_unet(
    tmp_path: Path, unets
) -> None:
    first, second, third = unets
    path = _classifier(tmp_path / "c.onnx", first)
    recorded = set_operating_point(
        path, 0.9, held_out_metrics(_summary(second), 0.9), selected_on="s", unet=second
    )
    assert recorded["unet"] == unet_identity(second)
    model = OnnxModel.load(path, device="cpu")
    assert model.metadata.threshold == 0.9
    assert model.metadata.extra["unet"] == unet_identity(second)
    assert model.metadata.extra["unet_trained_on"] == unet_identity(first)
    assert paired_with(model, second) and not paired_with(model, first)
    options = PipelineOptions(classifier_model_path=path)
    assert load_classifier(options, second)[0] is not None
    assert "another U-Net" in load_classifier(options, first)[1]

    # paired again: the U-Net whose candidates trained it is still the first
    set_operating_point(
        path, 0.9, held_out_metrics(_summary(third), 0.9), selected_on="s", unet=third
    )
    extra = OnnxModel.load(path, device="cpu").metadata.extra
    assert (extra["unet"], extra["unet_trained_on"]) == (
        unet_identity(third),
        unet_identity(first),
    )


def test_summaries_that_do_not_name_their_unet_keep_the_pairing(tmp_path: Path, unets) -> None:
    first, second, _ = unets
    path = _classifier(tmp_path / "c.onnx", first)
    set_operating_point(path, 0.9, held_out_metrics(_summary(None), 0.9), selected_on="s")
    model = OnnxModel.load(path, device="cpu")
    assert model.metadata.threshold == 0.9 and paired_with(model, first)
    assert "unet_trained_on" not in model.metadata.extra
    with pytest.raises(InputError, match="measured behind an unrecorded U-Net"):
        set_operating_point(
            path, 0.9, held_out_metrics(_summary(None), 0.9), selected_on="s", unet=second
        )


def test_set_threshold_cli_pairs_with_the_named_unet(tmp_path: Path, unets) -> None:
    from cmb.cli import main

    first, second, _ = unets
    path = _classifier(tmp_path / "c.onnx", first)
    held_out = tmp_path / "filter_effect.json"
    held_out.write_text(json.dumps(_summary(second)))
    args = ["classifier", "set-threshold", str(path), "--threshold", "0.9"]
    args += ["--held-out", str(held_out), "--selected-on", "selection set"]
    assert main(args) != 0  # measured behind the second, paired with the first
    assert main([*args, "--unet", str(second.path)]) == 0
    assert paired_with(OnnxModel.load(path, device="cpu"), second)


def test_the_candidate_threshold_changes_only_to_the_one_measured(tmp_path: Path, unets) -> None:
    """The product extracts candidates at cmb.candidate_threshold: it may only become the
    U-Net threshold the held-out summary was measured at."""
    from model.candidate_classifier import candidate_threshold

    first, _, _ = unets
    path = _classifier(tmp_path / "c.onnx", first)  # extracts at 0.3
    at_01 = held_out_metrics(_summary(first) | {"unet_threshold": 0.1}, 0.9)
    with pytest.raises(InputError, match=r"extracted at U-Net >= 0\.1, but .* at 0\.3"):
        set_operating_point(path, 0.9, at_01, selected_on="s")
    unrecorded = held_out_metrics(_summary(first), 0.9)
    with pytest.raises(InputError, match="does not record its U-Net threshold"):
        set_operating_point(path, 0.9, unrecorded, selected_on="s", unet_threshold=0.1)
    assert candidate_threshold(OnnxModel.load(path, device="cpu")) == 0.3  # untouched

    recorded = set_operating_point(path, 0.9, at_01, selected_on="s", unet_threshold=0.1)
    assert recorded["unet_threshold"] == 0.1
    assert candidate_threshold(OnnxModel.load(path, device="cpu")) == 0.1
    # the CLI: a summary measured at 0.3 no longer fits the file, unless 0.3 is set again
    from cmb.cli import main

    held_out = tmp_path / "filter_effect.json"
    held_out.write_text(json.dumps(_summary(first) | {"unet_threshold": 0.3}))
    args = ["classifier", "set-threshold", str(path), "--threshold", "0.9"]
    args += ["--held-out", str(held_out), "--selected-on", "selection set"]
    assert main(args) != 0
    assert main([*args, "--unet-threshold", "0.3"]) == 0
    assert candidate_threshold(OnnxModel.load(path, device="cpu")) == 0.3


def test_a_pair_measured_on_a_finer_grid_sets_the_grid_and_refuses_other_metrics(
    tmp_path: Path, unets
) -> None:
    """--unet-spacing: the classifier (trained behind the U-Net's own grid) runs the U-Net on
    the grid its held-out metrics were measured on; metrics of another grid are refused."""
    from model.candidate_classifier import unet_spacing

    first, _, _ = unets
    path = _classifier(tmp_path / "c.onnx", first)
    fine = (0.7, 0.7, 0.7)
    on_fine = _summary(None) | {"unet": unet_identity(first, fine)}

    def pair(summary: dict[str, object], grid: tuple[float, ...], **kwargs: object) -> None:
        metrics = held_out_metrics(summary, 0.9)
        set_operating_point(path, 0.9, metrics, selected_on="s", unet_spacing_mm=grid, **kwargs)  # type: ignore[arg-type]

    with pytest.raises(InputError, match="--unet"):
        pair(on_fine, fine)
    with pytest.raises(InputError, match="measured behind"):  # the U-Net's own grid's metrics
        pair(_summary(first), fine, unet=first)
    pair(on_fine, fine, unet=first, version="0.5.1")
    model = OnnxModel.load(path, device="cpu")
    assert unet_spacing(model) == fine
    assert model.metadata.version == "0.5.1"
    assert model.metadata.extra["unet"] == unet_identity(first, fine)
    assert model.metadata.extra["unet_trained_on"] == unet_identity(first)
    assert paired_with(model, first)  # the same file, run on the finer grid
    assert load_classifier(PipelineOptions(classifier_model_path=path), first)[0] is not None

    # back to the U-Net's own grid: the key goes
    pair(_summary(first), tuple(float(v) for v in first.metadata.spacing_mm), unet=first)
    model = OnnxModel.load(path, device="cpu")
    assert unet_spacing(model) is None and model.metadata.version == "0.5.1"


def test_set_threshold_cli_sets_the_grid_and_the_version(tmp_path: Path, unets) -> None:
    from cmb.cli import main
    from model.candidate_classifier import unet_spacing

    first, _, _ = unets
    path = _classifier(tmp_path / "c.onnx", first)
    held_out = tmp_path / "filter_effect.json"
    held_out.write_text(json.dumps(_summary(None) | {"unet": unet_identity(first, (0.7,) * 3)}))
    args = ["classifier", "set-threshold", str(path), "--threshold", "0.9"]
    args += ["--held-out", str(held_out), "--selected-on", "selection set"]
    args += ["--unet-spacing", "0.7", "0.7", "0.7", "--version", "9.9.1"]
    assert main(args) != 0  # no --unet
    assert main([*args, "--unet", str(first.path)]) == 0
    model = OnnxModel.load(path, device="cpu")
    assert unet_spacing(model) == (0.7, 0.7, 0.7) and model.metadata.version == "9.9.1"
