"""`cmb classifier choose`: checkpoints scored on the product path of a cached selection set."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from model.candidate_classifier import candidate_threshold, unet_identity, uses_tta
from model.candidates import extract_candidates
from model.errors import InputError
from model.infer import predict_probability
from model.onnx_model import OnnxModel
from tests.helpers.onnx_factory import make_test_model
from training.classifier.choose import CheckpointScore, best, choose
from training.classifier.network import CandidateClassifier
from training.classifier.train import ClassifierConfig
from training.data import list_cases, load_volumes
from training.parcellation.filter_effect import save_outputs

LEFT_CEREBRAL_WM = 2  # FreeSurfer label


def _score(epoch: int, recall: float, fp: int) -> CheckpointScore:
    return CheckpointScore(f"epoch_{epoch:03d}.pt", epoch, 0.9, 0, fp, recall, 0.0, 0.0, 0.0)


def test_best_is_recall_first_then_fewer_false_positives_then_the_later_epoch() -> None:
    assert best([_score(10, 0.5, 3), _score(20, 0.6, 9), _score(30, 0.6, 9)]).epoch == 30
    assert best([_score(10, 0.6, 3), _score(20, 0.6, 4), _score(30, 0.5, 0)]).epoch == 10
    with pytest.raises(InputError, match="no checkpoint"):
        best([])


def _cache_selection(val_dir: Path, unet_path: Path, cache: Path, threshold: float) -> None:
    """What `filter_effect --cache` keeps, with a parcellation that is white matter everywhere."""
    unet = OnnxModel.load(unet_path, device="cpu")
    for ref in list_cases([val_dir]):
        image, _ = load_volumes(ref)
        labels, detections = extract_candidates(predict_probability(image, unet), threshold)
        parc = image.with_array(np.full(image.shape, LEFT_CEREBRAL_WM, np.float32))
        save_outputs(
            cache / f"{ref.case_id}.pkl", detections, labels, parc, unet_identity(unet), threshold
        )


def _checkpoints(folder: Path) -> list[Path]:
    """Checkpoints as the trainer writes them, made to keep every candidate (epochs 1 and 3)
    or none (epoch 2) by the head's bias: the choice is known whatever the weights are."""
    config = ClassifierConfig(candidate_threshold=0.5, features=(4, 8, 8))
    torch.manual_seed(0)
    net = CandidateClassifier(config.features, config.dropout)
    folder.mkdir()
    paths = []
    for epoch, bias, name in ((1, 30.0, "keeps_all"), (2, -30.0, "keeps_none"), (3, 30.0, "later")):
        with torch.no_grad():
            torch.nn.init.constant_(net.head.bias, bias)  # type: ignore[arg-type]
        state = {"state_dict": net.state_dict(), "config": asdict(config), "epoch": epoch}
        torch.save(state | {"threshold": 0.5, "training_wall_s": 1.0}, folder / f"{name}.pt")
        paths.append(folder / f"{name}.pt")
    return paths


def test_checkpoints_are_scored_on_the_product_path_and_the_best_is_chosen(
    unet: Path, layouts: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cmb.cli import main

    checkpoints = _checkpoints(tmp_path / "run")
    val_dir = layouts[1]
    cache = tmp_path / "cache"
    _cache_selection(val_dir, unet, cache, 0.5)

    out = tmp_path / "choice"
    args = ["classifier", "choose", *map(str, checkpoints), "--data", str(val_dir)]
    args += ["--cache", str(cache), "--out", str(out), "--unet", str(unet)]
    # a budget every candidate fits in: the tiny test U-Net finds ~40 spots per case
    assert main([*args, "--max-fp-per-scan", "100"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "choice.json").read_text())
    keeps_all, keeps_none, later = result["checkpoints"]
    assert [s["epoch"] for s in result["checkpoints"]] == [1, 2, 3]
    assert keeps_all["recall"] > 0 and keeps_all["fp"] > 0
    assert (keeps_none["tp"], keeps_none["fp"]) == (0, 0)
    # recall first (epoch 2 loses despite no FPs); on a full tie the later epoch
    assert (later["recall"], later["fp"]) == (keeps_all["recall"], keeps_all["fp"])
    assert result["chosen"] == later
    assert f"chosen: {later['checkpoint']}" in printed and "| **later.pt** | 3 |" in printed
    for s, checkpoint in zip(result["checkpoints"], checkpoints, strict=True):
        # each row is its replay's summary at its own operating point
        summary = json.loads((out / checkpoint.stem / "filter_effect.json").read_text())
        row = summary["by_configuration"]["defaults"][f"{s['threshold']:g}"]
        assert (row["tp"], row["fp"], row["recall"]) == (s["tp"], s["fp"], s["recall"])
        assert summary["n_cases"] == 3 and summary["n_truth"] == 6
        # scored as the product scores: the exported file, with test-time augmentation
        model = OnnxModel.load(out / f"{checkpoint.stem}.onnx", device="cpu")
        assert uses_tta(model) and candidate_threshold(model) == 0.5
    # the rules ran: what they kept is at most the U-Net's candidate ceiling
    assert keeps_all["recall"] <= summary["unet_candidates"]["recall"]


def test_a_cache_of_another_unet_is_refused_before_anything_runs(
    unet: Path, layouts: tuple[Path, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    _cache_selection(layouts[1], unet, cache, 0.5)
    other = make_test_model(tmp_path / "other.onnx", gain=5.0)
    out = tmp_path / "choice"
    with pytest.raises(InputError, match="come from"):
        choose([tmp_path / "missing.pt"], data=layouts[1], cache=cache, out=out, unet_path=other)
    assert not out.exists()
    with pytest.raises(InputError, match="no cached network outputs"):
        choose([tmp_path / "x.pt"], data=layouts[1], cache=tmp_path, out=out, unet_path=unet)
    with pytest.raises(InputError, match="--tta"):
        choose([tmp_path / "x.pt"], data=layouts[1], cache=cache, out=out, tta="rotations")
