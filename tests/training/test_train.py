"""Patch data and the training loop on a tiny dataset: cache, sampling, run folder, resume, CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import training.data
import training.export
import training.train
from model.errors import InputError
from model.onnx_model import ModelMetadata, OnnxModel
from model.preprocess import prepare
from tests.helpers.tiny_cmb_layout import write_tiny_layout
from training.config import TrainConfig, config_from_dict
from training.data import (
    CaseRef,
    PatchDataset,
    PoolPreparer,
    PreparedCase,
    crop,
    data_hash,
    list_cases,
    load_volumes,
    prepare_case,
    prepare_cases,
)
from training.export import build_metadata
from training.train import schedule_factor, train


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return (
        write_tiny_layout(root / "train", 3, split="train"),
        write_tiny_layout(root / "val", 2, split="val", seed0=100),
    )


def tiny_config(train_dir: Path, val_dir: Path, **optim: float) -> TrainConfig:
    return config_from_dict(
        {
            "patch_size": [32, 32, 32],
            "network": {"features": [4, 4, 8, 8, 16, 4]},
            "augment": {"enabled": False},
            "optim": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 2, "lr": 0.01, **optim},
            "data": {"train": [str(train_dir)], "val": [str(val_dir)], "fg_fraction": 0.7},
            "val": {"every": 1, "thresholds": [0.3, 0.5], "overlap": 0.0},
        }
    )


def test_crop_pads_outside_the_array() -> None:
    a = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    out = crop(a, (0, 0, 0), (2, 2, 2), fill=-1)
    assert out[0, 0, 0] == -1
    assert out[1, 1, 1] == a[0, 0, 0]
    assert crop(a, (10, 10, 10), (2, 2, 2), fill=-1).min() == -1


def test_prepared_cases_are_on_the_model_grid_normalized_and_cached(layout, tmp_path) -> None:
    train_dir, _ = layout
    refs = list_cases([train_dir])
    assert [r.n_cmbs for r in refs] == [2, 2, 0]
    meta = build_metadata(TrainConfig())
    cases = prepare_cases(refs, meta, tmp_path)
    case = cases[0]
    assert case.image.shape == (48, 56, 56)  # 24 slices of 2 mm -> 48 of 1 mm
    assert isinstance(case.image, np.memmap)
    head = np.asarray(case.image) > -2  # z-scored over the Otsu (head) mask
    assert abs(float(np.asarray(case.image)[head].mean())) < 0.5
    for c in case.centers:  # each CMB centre (from the record) lies in the target
        assert case.target[tuple(np.round(c).astype(int))] == 1
    threaded = prepare_cases(refs, meta, tmp_path / "threads", workers=3)
    assert [c.case_id for c in threaded] == [c.case_id for c in cases]  # same order
    for a, b in zip(threaded, cases, strict=True):
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert np.array_equal(a.centers, b.centers)
    with pytest.raises(ValueError, match="workers"):
        prepare_cases(refs, meta, tmp_path, workers=0)
    stamp = sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("image.npy"))
    prepare_cases(refs, meta, tmp_path)  # second call reads the cache
    assert sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("image.npy")) == stamp
    assert data_hash(refs) == data_hash(list(reversed(refs)))


def _wait_until(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_pool_preparer_adds_new_cases_in_order_once_each_and_reraises_failures(
    layout, tmp_path
) -> None:
    train_dir, _ = layout
    refs = list_cases([train_dir])
    meta = build_metadata(TrainConfig())
    preparer = PoolPreparer(meta, tmp_path, workers=2)
    preparer.include(refs[:1], prepare_cases(refs[:1], meta, tmp_path))
    assert preparer.add(refs) == 2  # the first one is in the pool already
    assert preparer.add(refs) == 0
    _wait_until(lambda: (preparer.collect(), preparer.waiting == 0)[1])
    assert [r.case_id for r in preparer.refs] == [r.case_id for r in refs]
    assert [c.case_id for c in preparer.cases] == [r.case_id for r in refs]
    assert not preparer.collect()  # nothing new

    missing = dataclasses.replace(refs[0], case_id="not-there")
    assert preparer.add([missing]) == 1
    with pytest.raises(InputError, match="not-there"):
        _wait_until(lambda: preparer.collect() and False)
    preparer.close()
    with pytest.raises(ValueError, match="workers"):
        PoolPreparer(meta, tmp_path, workers=0)


def test_a_growing_pool_never_holds_the_training_loop(
    layout, tmp_path, monkeypatch, caplog
) -> None:
    """A new case still being preprocessed leaves the epochs running; it joins once ready."""
    train_dir, val_dir = layout
    refs = list_cases([train_dir])
    release = threading.Event()

    def gated_prepare(ref: CaseRef, metadata: ModelMetadata, cache_dir: Path) -> PreparedCase:
        if ref.case_id == refs[2].case_id:
            assert release.wait(60), "never released"
        return prepare_case(ref, metadata, cache_dir)

    scans = iter([refs[:2]])  # the run starts with two cases; the generator adds a third
    monkeypatch.setattr(training.train, "_train_refs", lambda config: next(scans, refs))
    monkeypatch.setattr(training.data, "prepare_case", gated_prepare)
    original_collect = PoolPreparer.collect
    waiting_at_epoch_start: list[int] = []

    def collect(self: PoolPreparer) -> bool:
        waiting_at_epoch_start.append(self.waiting)
        if len(waiting_at_epoch_start) == 2:  # epoch 3: let the third case through, then take it
            release.set()
            _wait_until(lambda: self.waiting == 0 or original_collect(self))
            return True
        return original_collect(self)

    monkeypatch.setattr(PoolPreparer, "collect", collect)
    cfg = tiny_config(train_dir, val_dir, epochs=4)
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, rescan=True))
    with caplog.at_level(logging.INFO, logger="training.train"):
        result = train(cfg, tmp_path / "run", progress=False)
    assert result.epochs_done == 4
    assert waiting_at_epoch_start[0] == 1  # epoch 2 ran while the third case was being prepared
    grew = [r.getMessage() for r in caplog.records if "pool grew" in r.getMessage()]
    assert grew == ["pool grew to 3 training cases (0 more being prepared)"]


def test_patches_are_reproducible_and_oversample_foreground(layout, tmp_path) -> None:
    train_dir, _ = layout
    cases = prepare_cases(list_cases([train_dir]), build_metadata(TrainConfig()), tmp_path)
    ds = PatchDataset(cases, (32, 32, 32), 40, fg_fraction=1.0, fg_jitter=4, seed=3)
    a, b = ds[5], ds[5]
    assert a["image"].shape == (1, 32, 32, 32)
    assert torch.equal(a["image"], b["image"])
    ds.set_epoch(1)
    assert not torch.equal(ds[5]["image"], a["image"])
    assert all(float(ds[i]["label"].sum()) > 0 for i in range(10))
    bg = PatchDataset(cases, (32, 32, 32), 40, fg_fraction=0.0, seed=3)
    fractions = [float(bg[i]["label"].mean()) for i in range(10)]
    assert np.mean(fractions) < 0.01


def test_training_run_writes_logs_checkpoints_and_a_validated_model(layout, tmp_path) -> None:
    train_dir, val_dir = layout
    cfg = tiny_config(train_dir, val_dir)
    result = train(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert result.epochs_done == 2
    assert json.loads((run / "config.json").read_text()) == cfg.to_dict()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(r["train_loss"]) > 0 for r in rows)
    assert all(r["threshold"] in ("0.3", "0.5") for r in rows)
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last.pt").is_file()
    assert result.best_checkpoint is not None
    model = OnnxModel.load(run / "best.onnx", device="cpu")
    assert model.metadata.threshold in (0.3, 0.5)
    assert model.metadata.metrics is not None
    assert "recall" in model.metadata.metrics

    # resume continues at epoch 3 with the same config (epochs raised)
    more = cfg.replace(optim=cfg.optim.__class__(**{**cfg.to_dict()["optim"], "epochs": 3}))
    with pytest.raises(ValueError, match="config differs"):
        train(more, run, resume=True, progress=False)
    (run / "config.json").write_text(more.to_json())
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    ckpt["config"] = more.to_dict()
    torch.save(ckpt, run / "checkpoints" / "last.pt")
    again = train(more, run, resume=True, progress=False)
    assert again.epochs_done == 3
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]


def test_loss_goes_down_on_an_easy_task(layout, tmp_path) -> None:
    train_dir, _ = layout
    cfg = config_from_dict(
        {**tiny_config(train_dir, train_dir).to_dict(), "data": {"train": [str(train_dir)]}}
    )
    cfg = cfg.replace(
        optim=cfg.optim.__class__(**{**cfg.to_dict()["optim"], "epochs": 4, "steps_per_epoch": 6})
    )
    train(cfg, tmp_path / "run", progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0]


def test_a_time_budget_anneals_the_rate_by_the_clock_and_never_by_less() -> None:
    assert schedule_factor(50, 100, 0.0, "poly") == pytest.approx(0.5**0.9)
    assert schedule_factor(50, 100, 999.0, "constant", time_budget_s=10) == 1.0
    # the time fraction leads: a quarter of the budget spent after 1 % of the steps
    assert schedule_factor(1, 100, 25.0, "poly", time_budget_s=100) == pytest.approx(0.75**0.9)
    # the step fraction leads when it is further along
    assert schedule_factor(90, 100, 1.0, "poly", time_budget_s=100) == pytest.approx(0.1**0.9)
    assert schedule_factor(1, 100, 150.0, "poly", time_budget_s=100) == 0.0
    with pytest.raises(ValueError, match="time_budget_s"):
        tiny_config(Path("a"), Path("b"), time_budget_s=-1)


def test_a_spent_time_budget_ends_the_run_with_a_saved_validated_epoch(layout, tmp_path) -> None:
    train_dir, val_dir = layout
    # 1000 epochs planned, a budget far below one epoch: the run stops inside epoch 1
    cfg = tiny_config(train_dir, val_dir, epochs=1000, steps_per_epoch=50, time_budget_s=1e-3)
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.epochs_done == 1
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) == 1
    assert rows[0]["threshold"] in ("0.3", "0.5")  # the cut-short epoch was still validated
    assert float(rows[0]["lr"]) == 0.0  # annealed to zero at the budget
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["scheduler"]["last_epoch"] < 50  # it left the epoch early
    assert result.best_checkpoint is not None


def test_training_refuses_held_out_cases_in_the_training_folders(layout, tmp_path) -> None:
    _, val_dir = layout
    cfg = tiny_config(val_dir, val_dir)
    with pytest.raises(ValueError, match="held-out"):
        train(cfg, tmp_path / "run", progress=False)


def test_cli_train_then_export_with_validation(layout, tmp_path) -> None:
    from cmb.cli import main

    train_dir, val_dir = layout
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(tiny_config(train_dir, val_dir, epochs=1).to_json())
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg_file), "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "m.onnx"
    ckpt = str(run / "checkpoints" / "last.pt")
    preds = tmp_path / "preds"
    export_args = ["export", ckpt, "--out", str(out), "--val-data", str(val_dir)]
    assert main([*export_args, "--predictions", str(preds)]) == 0
    meta = OnnxModel.load(out, device="cpu").metadata
    report = json.loads((tmp_path / "m.metrics.json").read_text())
    assert meta.threshold == report["threshold"]
    assert report["validation"]["summary"]["scans"] == 2
    assert report["validation"]["summary"]["max_fp_per_scan"] == 0.5  # the config's
    budget = ["--max-fp-per-scan", "7.5", "--metrics-json", str(tmp_path / "b.json")]
    assert main([*export_args, *budget]) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["validation"]["summary"]["max_fp_per_scan"] == 7.5
    assert main([*export_args, "--max-fp-per-scan", "0"]) != 0
    # the saved candidates are what the evaluation package reads
    assert sorted(p.name for p in preds.iterdir()) == ["tiny-val-0100", "tiny-val-0101"]
    evaluate = ["evaluate", "--pred", str(preds), "--truth", str(val_dir)]
    assert main([*evaluate, "--out", str(tmp_path / "eval"), "--bootstrap", "0"]) == 0
    assert (tmp_path / "eval" / "metrics.json").is_file()
    # fine-tuning from the exported model is one command with --init
    run2 = tmp_path / "run2"
    args = ["train", "--config", str(cfg_file), "--out", str(run2), "--init", str(out)]
    assert main([*args, "--no-progress"]) == 0
    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(out)]) != 0


def test_cli_reports_unusable_training_input_as_input_errors_and_bugs_as_bugs(
    layout, tmp_path, capsys, monkeypatch
) -> None:
    from cmb.cli import main
    from training.errors import TrainingInputError

    train_dir, val_dir = layout
    # a config training cannot use: one line, the input error's exit code
    bad = json.loads(tiny_config(train_dir, val_dir).to_json())
    bad["loss"]["pos_weight"] = -1
    cfg_file = tmp_path / "bad.json"
    cfg_file.write_text(json.dumps(bad))
    assert main(["train", "--config", str(cfg_file), "--no-progress"]) == InputError.exit_code
    assert "pos_weight" in capsys.readouterr().err
    for section, spec in (("normalization", {"method": "nope"}), ("input_filter", {"m": 1})):
        cfg_file.write_text(json.dumps({**bad, "loss": {}, section: spec}))
        assert main(["train", "--config", str(cfg_file)]) == InputError.exit_code
        assert "bad config" in capsys.readouterr().err
    # held-out cases in the training folders
    leaked = tmp_path / "leaked.json"
    leaked.write_text(tiny_config(val_dir, val_dir).to_json())
    leak_run = ["train", "--config", str(leaked), "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(leak_run) == InputError.exit_code
    assert "held-out" in capsys.readouterr().err
    assert issubclass(TrainingInputError, ValueError)  # what library callers catch
    # any other ValueError from inside training or export is a bug: it shows as one
    good = tmp_path / "good.json"
    good.write_text(tiny_config(train_dir, val_dir).to_json())

    def broken(*_: object, **__: object) -> None:
        raise ValueError("a bug in training")

    monkeypatch.setattr(training.train, "train", broken)
    with pytest.raises(ValueError, match="a bug in training"):
        main(["train", "--config", str(good), "--no-progress"])
    monkeypatch.setattr(training.export, "export_checkpoint", broken)
    with pytest.raises(ValueError, match="a bug in training"):
        main(["export", str(tmp_path / "any.pt"), "--out", str(tmp_path / "m.onnx")])


def test_a_rescan_retries_an_unreadable_pool_but_stops_on_held_out_cases(
    layout, tmp_path, monkeypatch
) -> None:
    from training.errors import TrainingInputError
    from training.train import _rescan

    train_dir, val_dir = layout
    assert [r.case_id for r in _rescan(tiny_config(train_dir, val_dir)) or []] == [
        r.case_id for r in training.data.list_cases([train_dir])
    ]

    def half_written(_: object) -> list[object]:
        raise InputError("cases.jsonl: a line is being written")

    with monkeypatch.context() as patched:
        patched.setattr(training.train, "list_cases", half_written)
        assert _rescan(tiny_config(train_dir, val_dir)) is None
    with pytest.raises(TrainingInputError, match="held-out"):
        _rescan(tiny_config(val_dir, val_dir))


def test_validation_in_two_worker_processes_gives_the_same_report(layout, tmp_path) -> None:
    from training.export import export_onnx
    from training.network import build_network
    from training.validate import validate_model

    _, val_dir = layout
    cfg = tiny_config(val_dir, val_dir)
    torch.manual_seed(0)
    path = export_onnx(build_network(cfg.network), build_metadata(cfg), tmp_path / "m.onnx")
    refs = list_cases([val_dir])
    one = validate_model(path, refs, (0.3, 0.5), overlap=0.0)
    two = validate_model(path, refs, (0.3, 0.5), overlap=0.0, workers=2)
    assert one["per_threshold"] == two["per_threshold"]
    assert one["per_case"] == two["per_case"]
    assert set(one["per_case"]) == {r.case_id for r in refs}


def test_an_equal_score_with_fewer_false_positives_is_the_better_epoch() -> None:
    from training.train import improves

    best = {"recall": 0.58, "fp_per_scan": 48.0}
    assert improves(0.5, {"recall": 0.5, "fp_per_scan": 60.0}, None, None)
    assert improves(0.6, {"fp_per_scan": 60.0}, 0.58, best)
    assert improves(0.58, {"fp_per_scan": 30.7}, 0.58, best)
    assert not improves(0.58, {"fp_per_scan": 48.0}, 0.58, best)
    assert not improves(0.57, {"fp_per_scan": 1.0}, 0.58, best)
    assert not improves(0.58, {"fp_per_scan": None}, 0.58, best)


def test_fit_cases_log_the_recall_on_training_cases(layout, tmp_path) -> None:
    """val.fit_cases: each validation also measures the recall on the first training cases."""
    train_dir, val_dir = layout
    base = tiny_config(train_dir, val_dir, epochs=1)
    cfg = config_from_dict({**base.to_dict(), "val": {**base.to_dict()["val"], "fit_cases": 2}})
    train(cfg, tmp_path / "run", progress=False)
    (row,) = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert 0.0 <= float(row["fit_recall"]) <= 1.0
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    fit = ckpt["validation"]["fit"]
    assert (fit["cases"], fit["threshold"]) == (2, 0.3)  # the lowest validation threshold
    assert fit["recall"] == float(row["fit_recall"])
    with pytest.raises(ValueError, match="fit_cases"):
        config_from_dict({**base.to_dict(), "val": {**base.to_dict()["val"], "fit_cases": -1}})


def test_a_resumed_metrics_file_keeps_its_columns(tmp_path) -> None:
    """A run started before a column was added appends rows that still match its header."""
    from training.train import _write_csv

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,train_loss\n1,0.5\n")
    _write_csv(path, {"epoch": 2, "train_loss": 0.4, "fit_recall": 0.7})
    rows = list(csv.DictReader(path.open()))
    assert rows[1] == {"epoch": "2", "train_loss": "0.4"}
    fresh = tmp_path / "fresh.csv"
    _write_csv(fresh, {"epoch": 1, "fit_recall": 0.7})
    (row,) = list(csv.DictReader(fresh.open()))
    assert row["fit_recall"] == "0.7"


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[2] / "training" / "configs").glob("*.json")),
    ids=lambda p: p.name,
)
def test_every_committed_training_config_loads(path: Path) -> None:
    """The recipes the model card cites parse (unknown keys are refused) and round-trip."""
    from training.config import load_config

    config = load_config(path)
    assert config.data.train
    assert config_from_dict(config.to_dict()) == config  # what a run saves, it reloads


def test_trained_on_text_says_whether_the_run_validated() -> None:
    def ref(n: int, subject: int) -> CaseRef:
        return CaseRef(Path("."), f"c{n}", {"subject": subject, "source": "synthetic"})

    train_refs = [ref(0, 3), ref(1, 1)]
    text = training.train._describe_data(train_refs, [ref(2, 17), ref(3, 19)])
    assert text == (
        "2 synthetic training cases (subjects 1,3); validated on 2 held-out cases (subjects 17,19)"
    )
    # a run without validation (a GPU lease) must not claim "validated on 0 held-out cases"
    alone = training.train._describe_data(train_refs, [])
    assert alone.startswith("2 synthetic training cases (subjects 1,3); no validation")
    assert "held-out" not in alone


def test_training_cases_are_prepared_with_the_configs_input_filter(layout, tmp_path) -> None:
    """The U-Net trains on what the product will give it: a config's input filter goes into
    the training volumes (and into the cache key, so a cache of unfiltered cases is not reused)."""
    train_dir, _ = layout
    ref = list_cases([train_dir])[0]
    coarse = TrainConfig(spacing_mm=(2.0, 2.0, 2.0))  # the layout's 1 mm pixels are finer
    plain = build_metadata(coarse)
    declared = build_metadata(coarse.replace(input_filter={"method": "inplane_minimum"}))
    a = prepare_case(ref, plain, tmp_path)
    b = prepare_case(ref, declared, tmp_path)
    assert len(list(tmp_path.iterdir())) == 2
    image, _ = load_volumes(ref)
    np.testing.assert_array_equal(np.asarray(b.image), prepare(image, declared).array)
    assert float(np.asarray(b.image).mean()) < float(np.asarray(a.image).mean())  # darker
