"""Candidate classifier: harvest labels, training, export validated as a cascade, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from model.candidate_classifier import TASK, candidate_threshold, uses_tta
from model.errors import InputError
from model.onnx_model import OnnxModel
from training.classifier.export import export_classifier
from training.classifier.harvest import harvest, harvest_case
from training.classifier.network import CandidateClassifier
from training.classifier.train import (
    ClassifierConfig,
    Pool,
    augment,
    positive_draw,
    recall_at_fp,
)
from training.data import list_cases


def test_harvest_labels_candidates_by_the_evaluation_rule(
    unet: Path, layouts: tuple[Path, Path]
) -> None:
    ref = list_cases([layouts[0]])[0]  # three dark spheres, two of them CMBs
    arrays = harvest_case(ref, OnnxModel.load(unet, device="cpu"), candidate_threshold=0.5)
    n = len(arrays["label"])
    assert arrays["patches"].shape == (n, 32, 32, 32)
    assert int(arrays["n_truth"]) == 2
    # every true CMB is a positive row exactly once: matched candidate or added truth
    positives = arrays["truth_index"][arrays["label"] == 1]
    assert sorted(positives.tolist()) == [0, 1]
    # each positive row carries its CMB's size (the apparent diameter), the others none
    apparent = [c["diameter_apparent_mm"] for c in ref.record["cmbs"]]
    sizes = arrays["truth_diameter_mm"]
    for row in np.flatnonzero(arrays["label"] == 1):
        assert sizes[row] == pytest.approx(apparent[arrays["truth_index"][row]], abs=1e-5)
    assert np.all(np.isnan(sizes[arrays["label"] == 0]))
    added = ~arrays["is_candidate"]
    assert np.all(arrays["label"][added] == 1)
    assert np.all(np.isnan(arrays["unet_probability"][added]))
    assert np.all(arrays["unet_probability"][arrays["is_candidate"]] >= 0.5)
    assert (arrays["label"][arrays["is_candidate"]] == 0).sum() >= 1  # the mimic
    # the centre of a positive cube is dark (a sphere), the cube's rim is tissue
    cube = arrays["patches"][arrays["label"] == 1][0].astype(np.float32)
    assert cube[16, 16, 16] < cube[:, :, :4].mean()


def test_recall_at_fp_picks_the_lowest_cut_within_the_limit() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)
    label = np.array([1, 0, 1, 0, 1], np.uint8)
    # 2 scans, 0.5 FP/scan -> at most 1 FP: the top 3 rows (2 TP, 1 FP)
    recall, fps, threshold = recall_at_fp(scores, label, n_truth=4, n_scans=2, max_fp_per_scan=0.5)
    assert (recall, fps, threshold) == (0.5, 0.5, pytest.approx(0.7))


def _pool_of_sizes(sizes: list[float] | None) -> Pool:
    """A pool of one case whose rows are positives of these sizes (None: not recorded)."""
    n = 4
    return Pool(
        patches=np.zeros((n, 1, 8, 8, 8), np.float16),
        label=np.ones(n, np.uint8),
        unet_probability=np.ones(n, np.float32),
        is_candidate=np.ones(n, bool),
        case=np.zeros(n, np.int32),
        n_truth=np.array([n], np.int32),
        case_ids=["c"],
        truth_diameter_mm=None if sizes is None else np.asarray(sizes, np.float32),
    )


def test_small_positives_are_drawn_as_often_as_their_weight_asks() -> None:
    pool = _pool_of_sizes([1.5, 2.5, 4.0, float("nan")])  # NaN: a truth without a size
    pos = np.arange(4)
    p, n_small = positive_draw(pool, pos, ClassifierConfig(small_weight=3.0))
    assert n_small == 2 and p is not None
    np.testing.assert_allclose(p, [3 / 8, 3 / 8, 1 / 8, 1 / 8])
    # the weight 1 keeps the unweighted draw of every run before the option
    assert positive_draw(pool, pos, ClassifierConfig()) == (None, 2)
    p5, n5 = positive_draw(pool, pos, ClassifierConfig(small_weight=2.0, small_below_mm=5.0))
    assert n5 == 3 and p5 is not None
    np.testing.assert_allclose(p5, [2 / 7, 2 / 7, 2 / 7, 1 / 7])
    draws = np.random.default_rng(0).choice(pos, 40_000, p=p)
    small_share = float(np.isin(draws, [0, 1]).mean())
    assert small_share == pytest.approx(0.75, abs=0.01)

    unsized = _pool_of_sizes(None)
    assert positive_draw(unsized, pos, ClassifierConfig()) == (None, None)
    with pytest.raises(ValueError, match="does not record the CMBs' sizes"):
        positive_draw(unsized, pos, ClassifierConfig(small_weight=3.0))
    with pytest.raises(ValueError, match="must be positive"):
        positive_draw(pool, pos, ClassifierConfig(small_weight=0.0))


def test_augment_keeps_shape_and_changes_patches() -> None:
    rng = np.random.default_rng(0)
    patches = rng.normal(size=(4, 1, 32, 32, 32)).astype(np.float16)
    out = augment(patches, rng, 24, 3)
    assert out.shape == (4, 1, 24, 24, 24) and out.dtype == np.float32
    assert not np.allclose(out, patches[:, :, 4:28, 4:28, 4:28].astype(np.float32))


def test_augment_moves_every_channel_of_a_cube_alike() -> None:
    """Shift, flips and swap are one per cube: two identical channels stay identical up to
    the noise (a per-voxel standard deviation of at most 0.15 each), where a pattern of
    standard deviation 10 moved differently would differ by tens."""
    rng = np.random.default_rng(1)
    one = (10.0 * rng.normal(size=(64, 1, 32, 32, 32))).astype(np.float16)
    out = augment(np.concatenate([one, one], axis=1), rng, 24, 3)
    assert out.shape == (64, 2, 24, 24, 24)
    assert float(np.abs(out[:, 0] - out[:, 1]).max()) < 2.0


def test_train_export_and_cascade_validation_through_the_cli(
    unet: Path,
    layouts: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cmb.cli import main

    train_dir, val_dir = layouts
    h_train, h_val = tmp_path / "h_train", tmp_path / "h_val"
    common = ["--unet", str(unet), "--candidate-threshold", "0.5"]
    assert (
        main(["classifier", "harvest", "--data", str(train_dir), "--out", str(h_train), *common])
        == 0
    )
    assert harvest([val_dir], unet, h_val, candidate_threshold=0.5) == 3
    assert harvest([val_dir], unet, h_val, candidate_threshold=0.5) == 0  # resumes: all done
    run = tmp_path / "run"
    args = ["classifier", "train", "--train", str(h_train), "--val", str(h_val), "--out", str(run)]
    args += ["--epochs", "2", "--steps", "3", "--candidate-threshold", "0.5", "--keep-every", "2"]
    assert main(args) == 0
    best = json.loads((run / "best.json").read_text())
    assert best["epoch"] in (1, 2) and best["val_cases"] == 3
    last = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 2  # the last epoch is kept beside the best one
    kept = sorted(p.name for p in run.glob("epoch_*.pt"))
    assert kept == ["epoch_002.pt"]  # and every second one (--keep-every 2)
    log = (run / "log.csv").read_text().splitlines()
    assert len(log) == 3 and log[0].endswith("recall_ceiling,seconds")
    pool = Pool.load([str(h_train)])
    rows = (pool.label == 1) & pool.is_candidate
    assert best["train_positives"] == int(rows.sum()) and best["train_negatives"] >= 1
    assert best["train_small_positives"] == 0  # the tiny cases' spheres are 4-6 mm

    # --small-weight: the positives under --small-below are counted and drawn more often
    weighted = tmp_path / "weighted"
    small = ["--small-weight", "4", "--small-below", "5"]
    assert main([*args[:7], str(weighted), *args[8:], *small]) == 0
    config = json.loads((weighted / "config.json").read_text())
    assert (config["small_weight"], config["small_below_mm"]) == (4.0, 5.0)
    assert pool.truth_diameter_mm is not None
    under5 = int((rows & (pool.truth_diameter_mm < 5.0)).sum())
    assert 0 < under5 < int(rows.sum())
    assert json.loads((weighted / "best.json").read_text())["train_small_positives"] == under5
    # a harvest without sizes (one from before they were recorded) is refused, clearly
    old = tmp_path / "h_old"
    old.mkdir()
    for path in h_train.glob("*.npz"):
        with np.load(path) as z:
            np.savez(old / path.name, **{k: z[k] for k in z.files if k != "truth_diameter_mm"})
    refused = ["classifier", "train", "--train", str(old), "--val", str(h_val)]
    refused += ["--out", str(tmp_path / "refused"), "--candidate-threshold", "0.5", *small]
    assert main(refused) == InputError.exit_code
    assert "does not record the CMBs' sizes" in capsys.readouterr().err
    # a ValueError that is not about the harvests is a bug: it shows, not as an input error
    import training.classifier.train as train_module

    def broken(*_: object, **__: object) -> None:
        raise ValueError("a bug in training")

    with monkeypatch.context() as patched:
        patched.setattr(train_module, "train", broken)
        with pytest.raises(ValueError, match="a bug in training"):
            main(args)

    assert main(["classifier", "compare", str(run / "best.pt"), "--val", str(h_val)]) == 0
    from training.classifier.compare import compare

    table = compare(run / "best.pt", [str(h_val)])
    assert table["scans"] == 3 and table["cmbs"] == 6
    assert set(table["recall_at_fp_per_scan"]) == {"unet_alone", "cascade"}
    assert all(
        0.0 <= r <= table["recall_ceiling"]
        for r in table["recall_at_fp_per_scan"]["cascade"].values()
    )

    out = tmp_path / "classifier.onnx"
    export = ["classifier", "export", str(run / "best.pt"), "--out", str(out)]
    assert main([*export, "--unet", str(unet), "--val-data", str(val_dir), "--version", "0.9"]) == 0
    model = OnnxModel.load(out, device="cpu")
    assert model.metadata.task == TASK
    assert model.metadata.version == "0.9"
    assert model.metadata.patch_size == (24, 24, 24)
    assert candidate_threshold(model) == 0.5
    unet_model = OnnxModel.load(unet, device="cpu")
    assert model.metadata.normalization == unet_model.metadata.normalization
    assert f"sha256:{unet_model.info.sha256}" in model.metadata.extra["unet"]
    report = json.loads(out.with_suffix(".metrics.json").read_text())
    assert report["threshold"] == model.metadata.threshold
    assert report["validation"]["summary"]["scans"] == 3
    assert model.metadata.metrics == report["validation"]["summary"]

    # ONNX Runtime and torch agree on the exported network
    state = torch.load(run / "best.pt", map_location="cpu", weights_only=False)
    config = ClassifierConfig(**state["config"])
    net = CandidateClassifier(config.features, config.dropout).eval()
    net.load_state_dict(state["state_dict"])
    x = np.random.default_rng(2).normal(size=(3, 1, 24, 24, 24)).astype(np.float32)
    with torch.no_grad():
        expected = torch.sigmoid(net(torch.from_numpy(x))).numpy()
    assert float(np.abs(model.run(x) - expected).max()) <= 1e-4
    assert len(Pool.load([str(h_train)]).case_ids) == 3

    # two checkpoints export as one ensemble: the mean of their probabilities
    ensemble = tmp_path / "ensemble.onnx"
    members = [str(run / "best.pt"), str(run / "last.pt")]
    tta = ["--tta", "flips_inplane_swap"]
    assert (
        main(["classifier", "export", *members, "--out", str(ensemble), "--unet", str(unet), *tta])
        == 0
    )
    both = OnnxModel.load(ensemble, device="cpu")
    probabilities = []
    for member in members:
        state = torch.load(member, map_location="cpu", weights_only=False)
        member_net = CandidateClassifier(config.features, config.dropout).eval()
        member_net.load_state_dict(state["state_dict"])
        with torch.no_grad():
            probabilities.append(torch.sigmoid(member_net(torch.from_numpy(x))).numpy())
    assert float(np.abs(both.run(x) - np.mean(probabilities, axis=0)).max()) <= 1e-4
    assert uses_tta(both) and candidate_threshold(both) == 0.5  # scored as the product scores
    recorded = json.loads(both.metadata.extra["ensemble"])
    assert [m["checkpoint"] for m in recorded] == members
    assert "epoch" not in both.metadata.extra  # one per member instead
    other = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    other["config"]["patch"] = 16
    torch.save(other, tmp_path / "other_cube.pt")
    other["config"]["patch"] = config.patch
    other["config"]["input_filter"] = {"method": "inplane_minimum"}
    torch.save(other, tmp_path / "other_filter.pt")
    for odd in ("other_cube.pt", "other_filter.pt"):
        with pytest.raises(InputError, match="same of all five"):
            export_classifier([run / "best.pt", tmp_path / odd], tmp_path / "x.onnx")

    # the operating point, chosen elsewhere with the location filter, written in place
    held_out = tmp_path / "filter_effect.json"
    row = {"tp": 4, "fp": 1, "recall": 0.6667, "recall_large": 0.5, "precision": 0.8}
    row |= {"f1": 0.7273, "fp_per_scan": 0.3333, "scan_sensitivity": 1.0, "scan_specificity": 1.0}
    summary = {"n_cases": 3, "n_truth": 6, "n_truth_large": 2, "match_rule": "center:3"}
    held_out.write_text(json.dumps(summary | {"by_configuration": {"defaults": {"0.96": row}}}))
    weights_before = [t.raw_data for t in onnx.load(str(out)).graph.initializer]
    set_args = ["classifier", "set-threshold", str(out), "--held-out", str(held_out)]
    tta = ["--tta", "flips_inplane_swap"]
    assert main([*set_args, "--threshold", "0.96", "--selected-on", "selection S", *tta]) == 0
    moved = OnnxModel.load(out, device="cpu")
    assert moved.metadata.threshold == 0.96
    assert moved.metadata.metrics is not None
    assert moved.metadata.metrics["recall_ge3mm"] == 0.5
    assert moved.metadata.metrics["selected_on"] == "selection S"
    assert moved.metadata.metrics["match_rule"] == "center:3"  # the summary's, not a default
    assert moved.metadata.extra == model.metadata.extra | {"tta": "flips_inplane_swap"}
    assert uses_tta(moved)
    assert [t.raw_data for t in onnx.load(str(out)).graph.initializer] == weights_before
    report = json.loads(out.with_suffix(".metrics.json").read_text())
    assert report["threshold"] == 0.96
    assert report["operating_point"]["previous_threshold"] == model.metadata.threshold
    assert main([*set_args, "--threshold", "0.97", "--selected-on", "x"]) != 0
    assert "0.97 was not measured" in capsys.readouterr().err
    assert OnnxModel.load(out, device="cpu").metadata.threshold == 0.96  # untouched


def test_a_failed_case_stops_the_harvest_instead_of_running_every_queued_case(
    unet: Path, tmp_path: Path
) -> None:
    from tests.helpers.tiny_cmb_layout import make_case
    from training.datasets.layout import finalize, write_case

    data = tmp_path / "data"
    for n in range(8):
        write_case(data, make_case(n, 1, "train"))
    finalize(data)
    first = list_cases([data])[0]
    (data / first.record["image"]).write_bytes(b"not a NIfTI file")  # the first case fails
    out = tmp_path / "harvest"
    with pytest.raises(Exception):  # noqa: B017 - the image reader's own error
        harvest([data], unet, out, candidate_threshold=0.5, workers=1)
    # the pool had handed at most a couple of cases to its worker; the rest were cancelled
    assert len(list(out.glob("*.npz"))) <= 3
