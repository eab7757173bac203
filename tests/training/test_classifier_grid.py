"""A cascade on another grid than the U-Net's own: harvest, train, export, choose, set-threshold."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model.candidate_classifier import extract_patches, unet_identity, unet_spacing
from model.errors import InputError
from model.onnx_model import OnnxModel
from model.preprocess import prepare
from tests.helpers.onnx_factory import make_test_model
from training.classifier.choose import choose
from training.classifier.export import export_classifier
from training.classifier.harvest import harvest, harvest_case
from training.classifier.operating_point import held_out_metrics, set_operating_point
from training.classifier.train import ClassifierConfig, Pool, train
from training.data import list_cases, load_volumes

FINE = (0.8, 0.8, 0.8)


@pytest.fixture(scope="module")
def fine_harvest(
    unet: Path, layouts: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    from cmb.cli import main

    root = tmp_path_factory.mktemp("fine")
    train_dir, val_dir = layouts
    grid = ["--unet-spacing", *map(str, FINE)]
    for data, name in ((train_dir, "train"), (val_dir, "val")):
        args = ["classifier", "harvest", "--data", str(data), "--out", str(root / name)]
        assert main([*args, "--unet", str(unet), "--candidate-threshold", "0.5", *grid]) == 0
    return root / "train", root / "val"


def _train_tiny(
    harvest_dirs: tuple[Path, Path], out: Path, channels: list[int] | None = None
) -> None:
    """Two steps of a small classifier on a harvest (train, val)."""
    config = ClassifierConfig(
        epochs=1, steps_per_epoch=2, candidate_threshold=0.5, features=(4, 8, 16), channels=channels
    )
    config.train, config.val = [str(harvest_dirs[0])], [str(harvest_dirs[1])]
    train(config, out)


def _harvest_both(
    layouts: tuple[Path, Path], unet: Path, root: Path, *flags: str
) -> dict[str, Path]:
    """``cmb classifier harvest`` of the training and validation layouts into ``root``
    (``train``, ``val``), candidates at 0.5, with ``flags``."""
    from cmb.cli import main

    dirs = {}
    for data, name in ((layouts[0], "train"), (layouts[1], "val")):
        dirs[name] = root / name
        args = ["classifier", "harvest", "--data", str(data), "--out", str(dirs[name])]
        args += ["--unet", str(unet), "--candidate-threshold", "0.5"]
        assert main([*args, *flags]) == 0
    return dirs


def test_the_harvest_records_its_grid_and_cuts_the_cubes_there(
    unet: Path, layouts: tuple[Path, Path], fine_harvest: tuple[Path, Path], tmp_path: Path
) -> None:
    fine_train, _ = fine_harvest
    own = tmp_path / "own"
    assert harvest([layouts[0]], unet, own, candidate_threshold=0.5) == 3
    one = sorted(own.glob("*.npz"))[0]
    with np.load(one) as a, np.load(fine_train / one.name) as b:
        assert a["spacing_mm"].tolist() == [1.0, 1.0, 1.0]
        assert b["spacing_mm"].tolist() == list(FINE)
        assert b["patches"].shape[1:] == a["patches"].shape[1:] == (32, 32, 32)
        # the cubes are those of the image prepared on the finer grid
        ref = next(r for r in list_cases([layouts[0]]) if r.case_id == one.stem)
        image, _ = load_volumes(ref)
        plan = dataclasses.replace(OnnxModel.load(unet, device="cpu").metadata, spacing_mm=FINE)
        expected = extract_patches(prepare(image, plan), b["center_lps_mm"], (32, 32, 32))
        np.testing.assert_allclose(b["patches"], expected[:, 0], atol=1e-2)
    assert Pool.load([str(fine_train)]).spacing_mm == FINE
    with pytest.raises(ValueError, match="different grids"):
        Pool.load([str(own), str(fine_train)])


def test_behind_a_filtering_unet_the_cubes_are_cut_from_the_image_as_acquired(
    layouts: tuple[Path, Path], tmp_path: Path
) -> None:
    """The exported classifier declares no input filter, so its training cubes must not
    carry the U-Net's: on a 2 mm grid the 1 mm pixels of the tiny cases get a 3 x 3 minimum."""
    declared = {"cmb.input_filter": json.dumps({"method": "inplane_minimum"})}
    unet = make_test_model(tmp_path / "f.onnx", gain=20.0, metadata=declared)
    model = OnnxModel.load(unet, device="cpu")
    ref = list_cases([layouts[0]])[0]
    coarse = (2.0, 2.0, 2.0)
    arrays = harvest_case(ref, model, candidate_threshold=0.5, spacing_mm=coarse)
    image, _ = load_volumes(ref)
    plan = model.metadata.on_grid(coarse)
    as_acquired = dataclasses.replace(plan, input_filter=None)
    size = arrays["patches"].shape[1:]
    centres = arrays["center_lps_mm"]
    expected = extract_patches(prepare(image, as_acquired), centres, size)[:, 0]
    filtered = extract_patches(prepare(image, plan), centres, size)[:, 0]
    np.testing.assert_allclose(arrays["patches"], expected, atol=1e-2)
    assert not np.allclose(arrays["patches"], filtered, atol=1e-2)


def test_cubes_cut_with_their_own_filter_train_a_classifier_that_declares_it(
    layouts: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--cube-filter``: the harvest minimum-filters the cubes (on a 2 mm grid the 1 mm
    pixels of the tiny cases get a 3 x 3 minimum), records it, and the exported classifier
    declares it, so that the product's ``prepare`` cuts the same cubes."""
    from cmb.cli import main

    minimum = {"method": "inplane_minimum"}
    unet = make_test_model(tmp_path / "u.onnx", gain=20.0, spacing_mm=(2.0, 2.0, 2.0))
    model = OnnxModel.load(unet, device="cpu")
    ref = list_cases([layouts[0]])[0]
    arrays = harvest_case(ref, model, candidate_threshold=0.5, cube_filter=minimum)
    image, _ = load_volumes(ref)
    filtered_plan = dataclasses.replace(model.metadata, input_filter=minimum)
    size = arrays["patches"].shape[1:]
    centres = arrays["center_lps_mm"]
    filtered = extract_patches(prepare(image, filtered_plan), centres, size)[:, 0]
    as_acquired = extract_patches(prepare(image, model.metadata), centres, size)[:, 0]
    np.testing.assert_allclose(arrays["patches"], filtered, atol=1e-2)
    assert not np.allclose(arrays["patches"], as_acquired, atol=1e-2)
    assert json.loads(str(arrays["input_filter"])) == minimum

    dirs = _harvest_both(layouts, unet, tmp_path, "--cube-filter", "inplane_minimum")
    assert Pool.load([str(dirs["train"])]).input_filter == minimum
    plain = tmp_path / "plain"
    assert harvest([layouts[0]], unet, plain, candidate_threshold=0.5) == 3
    assert Pool.load([str(plain)]).input_filter is None
    with pytest.raises(ValueError, match="different input filters or channels"):
        Pool.load([str(plain), str(dirs["train"])])
    with pytest.raises(ValueError, match="input filters"):
        _train_tiny((plain, dirs["val"]), tmp_path / "mixed")

    _train_tiny((dirs["train"], dirs["val"]), tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["input_filter"] == minimum
    out = export_classifier(tmp_path / "run" / "best.pt", tmp_path / "c.onnx", unet_path=unet)
    assert OnnxModel.load(out, device="cpu").metadata.input_filter == minimum
    bad = ["classifier", "harvest", "--data", str(layouts[0]), "--out", str(tmp_path / "x")]
    assert main([*bad, "--unet", str(unet), "--cube-filter", "median"]) == InputError.exit_code
    assert "--cube-filter 'median'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_classifier_trained_on_a_finer_harvest_runs_its_unet_there(
    unet: Path, fine_harvest: tuple[Path, Path], tmp_path: Path
) -> None:
    _train_tiny(fine_harvest, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "best.pt", map_location="cpu", weights_only=False)
    assert state["config"]["spacing_mm"] == list(FINE)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["spacing_mm"] == list(FINE)

    out = export_classifier(tmp_path / "run" / "best.pt", tmp_path / "c.onnx", unet_path=unet)
    model = OnnxModel.load(out, device="cpu")
    unet_model = OnnxModel.load(unet, device="cpu")
    assert model.metadata.spacing_mm == FINE  # its cubes are cut where they were harvested
    assert unet_spacing(model) == FINE
    identity = unet_identity(unet_model, FINE)
    assert model.metadata.extra["unet"] == identity
    assert identity.endswith("on a 0.8 x 0.8 x 0.8 mm grid")
    assert unet_identity(unet_model, (1.0, 1.0, 1.0)) == unet_identity(unet_model)

    # a held-out summary measured on the U-Net's own grid is not this cascade's
    row = {"tp": 1, "fp": 0, "recall": 0.5, "recall_large": 0.5, "precision": 1.0}
    base = {"n_cases": 3, "n_truth": 2, "n_truth_large": 1, "unet_threshold": 0.5}
    tables = {"by_configuration": {"defaults": {"0.9": row}}}
    for measured, ok in ((unet_identity(unet_model), False), (identity, True)):
        metrics = held_out_metrics(base | tables | {"unet": measured}, 0.9)
        if ok:
            recorded = set_operating_point(out, 0.9, metrics, selected_on="s")
            assert recorded["unet"] == identity
        else:
            with pytest.raises(InputError, match="measured behind"):
                set_operating_point(out, 0.9, metrics, selected_on="s")


def test_choose_needs_a_cache_of_the_checkpoints_grid(
    unet: Path, fine_harvest: tuple[Path, Path], tmp_path: Path
) -> None:
    from model.types import Volume
    from training.parcellation.filter_effect import save_outputs

    _train_tiny(fine_harvest, tmp_path / "run")
    fine = tmp_path / "run" / "best.pt"
    own = torch.load(fine, map_location="cpu", weights_only=False)
    own["config"]["spacing_mm"] = None
    torch.save(own, tmp_path / "own.pt")
    unet_model = OnnxModel.load(unet, device="cpu")
    empty = Volume(np.zeros((2, 2, 2), np.float32), np.eye(4))
    for grid in (None, FINE):
        cache = tmp_path / f"cache_{grid}"
        save_outputs(cache / "c.pkl", [], empty, empty, unet_identity(unet_model, grid), 0.5)
    common: dict[str, Any] = {"data": tmp_path, "out": tmp_path / "choice", "unet_path": unet}
    with pytest.raises(InputError, match="several U-Net grids"):
        choose([fine, tmp_path / "own.pt"], cache=tmp_path / f"cache_{FINE}", **common)
    with pytest.raises(InputError, match=r"not from .* 0\.8 mm grid"):
        choose([fine], cache=tmp_path / "cache_None", **common)
    with pytest.raises(InputError, match="come from"):
        choose([tmp_path / "own.pt"], cache=tmp_path / f"cache_{FINE}", **common)
    assert not (tmp_path / "choice").exists()


def test_cubes_cut_on_their_own_grid_behind_a_unet_on_another(
    unet: Path, layouts: tuple[Path, Path], fine_harvest: tuple[Path, Path], tmp_path: Path
) -> None:
    from cmb.cli import main

    coarse = (1.0, 1.0, 1.0)
    dirs = (tmp_path / "train", tmp_path / "val")
    for data, out in zip(layouts, dirs, strict=True):
        args = ["classifier", "harvest", "--data", str(data), "--out", str(out), "--unet"]
        grids = ["--unet-spacing", *map(str, FINE), "--cube-spacing", *map(str, coarse)]
        assert main([*args, str(unet), "--candidate-threshold", "0.5", *grids]) == 0
    one = sorted(dirs[0].glob("*.npz"))[0]
    with np.load(one) as a, np.load(fine_harvest[0] / one.name) as fine:
        assert a["spacing_mm"].tolist() == list(coarse)
        assert a["unet_spacing_mm"].tolist() == fine["unet_spacing_mm"].tolist() == list(FINE)
        # the same candidates as the fine harvest, their cubes cut from the 1 mm image
        np.testing.assert_array_equal(a["center_lps_mm"], fine["center_lps_mm"])
        ref = next(r for r in list_cases([layouts[0]]) if r.case_id == one.stem)
        image, _ = load_volumes(ref)
        plan = OnnxModel.load(unet, device="cpu").metadata
        expected = extract_patches(prepare(image, plan), a["center_lps_mm"], (32, 32, 32))
        np.testing.assert_allclose(a["patches"], expected[:, 0], atol=1e-2)
    pool = Pool.load([str(dirs[0])])
    assert (pool.spacing_mm, pool.unet_spacing_mm) == (coarse, FINE)
    own = tmp_path / "own"
    harvest([layouts[0]], unet, own, candidate_threshold=0.5)  # both grids 1 mm
    with pytest.raises(ValueError, match="different grids"):
        Pool.load([str(own), str(dirs[0])])

    _train_tiny(dirs, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["spacing_mm"], saved["unet_spacing_mm"]) == (list(coarse), list(FINE))
    out = export_classifier(tmp_path / "run" / "best.pt", tmp_path / "c.onnx", unet_path=unet)
    model = OnnxModel.load(out, device="cpu")
    assert model.metadata.spacing_mm == coarse  # the cubes' grid
    assert unet_spacing(model) == FINE  # the U-Net's
    assert model.metadata.extra["unet"] == unet_identity(OnnxModel.load(unet, device="cpu"), FINE)
    with pytest.raises(ValueError, match="harvest both on the same grids"):
        _train_tiny((dirs[0], fine_harvest[1]), tmp_path / "mixed")


def test_a_checkpoint_from_before_the_grids_were_separate_reads_one_grid() -> None:
    assert ClassifierConfig().unet_grid() is None
    assert ClassifierConfig(spacing_mm=list(FINE)).unet_grid() == FINE
    both = ClassifierConfig(spacing_mm=[1.0, 1.0, 1.0], unet_spacing_mm=list(FINE))
    assert both.unet_grid() == FINE


def test_a_unet_identity_names_its_grid_and_the_name_reads_back(unet: Path) -> None:
    from model.candidate_classifier import identity_grid

    unet_model = OnnxModel.load(unet, device="cpu")
    assert identity_grid(unet_identity(unet_model, FINE)) == FINE
    assert identity_grid(unet_identity(unet_model, (0.7, 0.65, 0.5))) == (0.7, 0.65, 0.5)
    assert identity_grid(unet_identity(unet_model)) is None
    assert identity_grid(unet_identity(unet_model, (1.0, 1.0, 1.0))) is None  # its own
    assert identity_grid("") is None


def test_replay_refuses_a_classifier_of_another_grid_than_the_cache(
    unet: Path, fine_harvest: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model.types import Volume
    from training.parcellation.filter_effect import main, save_outputs

    _train_tiny(fine_harvest, tmp_path / "run")
    fine = export_classifier(tmp_path / "run" / "best.pt", tmp_path / "c.onnx", unet_path=unet)
    data = tmp_path / "data"
    data.mkdir()
    (data / "cases.jsonl").write_text(json.dumps({"case_id": "c", "cmbs": []}) + "\n")
    empty = Volume(np.zeros((2, 2, 2), np.float32), np.eye(4))
    own = unet_identity(OnnxModel.load(unet, device="cpu"))
    save_outputs(tmp_path / "cache" / "c.pkl", [], empty, empty, own, 0.5)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "cases.jsonl").write_text("an earlier result\n")
    args = ["--data", str(data), "--out", str(tmp_path / "o"), "--replay", str(tmp_path / "cache")]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--classifier", str(fine)])
    assert exc.value.code == 2
    assert (tmp_path / "o" / "cases.jsonl").read_text() == "an earlier result\n"  # kept
    err = capsys.readouterr().err
    assert "runs the U-Net on a 0.8 x 0.8 x 0.8 mm grid" in err and "--unet-spacing" in err


def test_cubes_of_another_size_are_harvested_and_a_larger_input_trains_on_them(
    unet: Path, layouts: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--cube-size: larger cubes for a larger input (32 shifted by 3 needs 38); the default
    harvest cannot feed that input, and harvests of two sizes do not mix."""
    from cmb.cli import main

    train_dir, val_dir = layouts
    common = ["--unet", str(unet), "--candidate-threshold", "0.5"]
    for data, name, size in ((train_dir, "big", "38"), (val_dir, "big_val", "38")):
        args = ["classifier", "harvest", "--data", str(data), "--out", str(tmp_path / name)]
        assert main([*args, *common, "--cube-size", size]) == 0
    big = Pool.load([str(tmp_path / "big")])
    assert big.cube_size == 38 and big.patches.shape[1:] == (1, 38, 38, 38)
    assert harvest([train_dir], unet, tmp_path / "small", candidate_threshold=0.5) == 3
    with pytest.raises(ValueError, match="cubes of different sizes"):
        Pool.load([str(tmp_path / "big"), str(tmp_path / "small")])
    with pytest.raises(ValueError, match="at least 8"):
        harvest([train_dir], unet, tmp_path / "tiny", candidate_threshold=0.5, size=4)

    train_args = ["classifier", "train", "--epochs", "1", "--steps", "2"]
    train_args += ["--candidate-threshold", "0.5", "--features", "4", "8", "16"]
    train_args += ["--patch", "32", "--shift", "3"]
    small = [*train_args, "--train", str(tmp_path / "small"), "--val", str(tmp_path / "big_val")]
    assert main([*small, "--out", str(tmp_path / "refused")]) == InputError.exit_code
    assert re.search(r"cubes of 32 voxels.*needs 38: harvest with --cube", capsys.readouterr().err)
    args = [*train_args, "--train", str(tmp_path / "big"), "--val", str(tmp_path / "big_val")]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["patch"], config["shift"]) == (32, 3)
    exported = export_classifier(tmp_path / "run" / "best.pt", tmp_path / "c.onnx", unet_path=unet)
    assert OnnxModel.load(exported, device="cpu").metadata.patch_size == (32, 32, 32)


def test_extra_channels_are_harvested_beside_the_cube_and_the_classifier_declares_them(
    layouts: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--extra-channel``: each row holds the cube as acquired and the same cube from the
    minimum-filtered image; training on both exports a two-channel classifier that declares
    ``cmb.extra_channels``, whose ONNX output is the checkpoint's; ``--channels`` trains on a
    subset (channel 0 alone: the classifier as before; channel 1 alone: ``input_filter``)."""
    from cmb.cli import main
    from training.classifier.train import load_checkpoint

    minimum = {"method": "inplane_minimum"}
    unet = make_test_model(tmp_path / "u.onnx", gain=20.0, spacing_mm=(2.0, 2.0, 2.0))
    model = OnnxModel.load(unet, device="cpu")
    ref = list_cases([layouts[0]])[0]
    arrays = harvest_case(ref, model, candidate_threshold=0.5, extra_channels=[minimum])
    image, _ = load_volumes(ref)
    n = len(arrays["label"])
    assert arrays["patches"].shape == (n, 2, 32, 32, 32)
    centres = arrays["center_lps_mm"]
    filtered_plan = dataclasses.replace(model.metadata, input_filter=minimum)
    for channel, plan in enumerate((model.metadata, filtered_plan)):
        expected = extract_patches(prepare(image, plan), centres, (32, 32, 32))[:, 0]
        np.testing.assert_allclose(arrays["patches"][:, channel], expected, atol=1e-2)
    assert json.loads(str(arrays["extra_channels"])) == [minimum]

    dirs = _harvest_both(layouts, unet, tmp_path, "--extra-channel", "inplane_minimum")
    pool = Pool.load([str(dirs["train"])])
    assert pool.channel_filters == [None, minimum] and pool.patches.shape[1] == 2
    assert pool.select_channels([1]).channel_filters == [minimum]
    with pytest.raises(ValueError, match="not among the harvest's 2"):
        pool.select_channels([2])
    plain = tmp_path / "plain"
    assert harvest([layouts[0]], unet, plain, candidate_threshold=0.5) == 3
    with pytest.raises(ValueError, match="different input filters or channels"):
        Pool.load([str(plain), str(dirs["train"])])
    with pytest.raises(ValueError, match="one per channel"):
        _train_tiny((plain, dirs["val"]), tmp_path / "mixed")

    _train_tiny((dirs["train"], dirs["val"]), tmp_path / "both")
    net, config, _ = load_checkpoint(tmp_path / "both" / "best.pt")
    assert config.extra_channels == [minimum] and config.input_channels == 2
    out = export_classifier(tmp_path / "both" / "best.pt", tmp_path / "c2.onnx", unet_path=unet)
    exported = OnnxModel.load(out, device="cpu")
    assert exported.metadata.extra_channels == (minimum,)
    assert exported.metadata.input_filter is None
    cubes = pool.patches[:4, :, 4:28, 4:28, 4:28].astype(np.float32)
    with torch.no_grad():
        reference = torch.sigmoid(net(torch.from_numpy(cubes))).numpy().reshape(-1)
    np.testing.assert_allclose(exported.run(cubes).reshape(-1), reference, atol=1e-5)

    train_args = ["classifier", "train", "--epochs", "1", "--steps", "2"]
    train_args += ["--candidate-threshold", "0.5", "--features", "4", "8", "16"]
    train_args += ["--train", str(dirs["train"]), "--val", str(dirs["val"])]
    assert main([*train_args, "--out", str(tmp_path / "first"), "--channels", "0"]) == 0
    _, first, _ = load_checkpoint(tmp_path / "first" / "best.pt")
    assert (first.input_filter, first.extra_channels, first.channels) == (None, [], [0])
    _train_tiny((dirs["train"], dirs["val"]), tmp_path / "second", channels=[1])
    out1 = export_classifier(tmp_path / "second" / "best.pt", tmp_path / "c1.onnx", unet_path=unet)
    assert OnnxModel.load(out1, device="cpu").metadata.input_filter == minimum
    with pytest.raises(InputError, match="the same of all five"):
        export_classifier(
            [tmp_path / "both" / "best.pt", tmp_path / "first" / "best.pt"],
            tmp_path / "ens.onnx",
            unet_path=unet,
        )

    bad = ["classifier", "harvest", "--data", str(layouts[0]), "--out", str(tmp_path / "x")]
    assert main([*bad, "--unet", str(unet), "--extra-channel", "median"]) == InputError.exit_code
    assert "--extra-channel 'median'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
