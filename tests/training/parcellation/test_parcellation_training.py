"""Synthesis, a few training steps, export with metadata, and the exported model in the runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from model.location.labels import LABEL_IDS
from model.location.parcellation import load_parcellation_model, parcellate_onnx
from model.onnx_model import OnnxModel
from model.types import Volume
from training.parcellation.export import export_checkpoint
from training.parcellation.labelmaps import LabelMap, load_label_maps, target_lut
from training.parcellation.network import ParcNetConfig
from training.parcellation.synth import NORMALIZATION, SynthConfig, Synthesizer
from training.parcellation.train import TrainConfig, train

TINY_NET = ParcNetConfig(features=(4, 4, 8, 8, 16, 4))


def toy_label_map() -> LabelMap:
    """A 48^3 'head' on a 2 mm canonical grid: scalp, cortex, WM, ventricles, thalami."""
    arr = np.zeros((48, 48, 48), np.int16)
    k, j, i = np.mgrid[:48, :48, :48]
    r = np.sqrt((k - 24) ** 2 + (j - 24) ** 2 + (i - 24) ** 2)
    arr[r < 22] = 507
    arr[(r < 19) & (i >= 24)] = 3
    arr[(r < 19) & (i < 24)] = 42
    arr[(r < 16) & (i >= 24)] = 2
    arr[(r < 16) & (i < 24)] = 41
    arr[(r < 4) & (i >= 24)] = 4
    arr[(r < 4) & (i < 24)] = 43
    arr[(np.abs(k - 20) < 3) & (np.abs(j - 24) < 3) & (np.abs(i - 30) < 3)] = 10
    arr[(np.abs(k - 20) < 3) & (np.abs(j - 24) < 3) & (np.abs(i - 18) < 3)] = 49
    affine = np.array([[0, 0, 2, -47], [0, 2, 0, -47], [2, 0, 0, -47], [0, 0, 0, 1]], float)
    return LabelMap(1, arr, affine)


@pytest.fixture(scope="module")
def synth(shared_data: Path) -> Synthesizer:
    return Synthesizer(SynthConfig(patch=32))


def test_sample_is_normalised_and_records_its_parameters(synth: Synthesizer) -> None:
    rng = np.random.default_rng(0)
    image, target, params = synth.sample(toy_label_map().array, rng)
    assert image.shape == target.shape == (32, 32, 32)
    assert image.dtype == np.float32 and image.min() >= 0.0 and image.max() <= 1.0
    assert target.max() < len(LABEL_IDS)
    for key in ("flip", "rotation_deg", "scale", "sequence", "thickness_mm", "gamma", "blur_vox"):
        assert key in params
    # non-brain tissue (507) is background in the target
    assert 0 in target


def test_flip_mirrors_the_image_and_swaps_left_right_labels(shared_data: Path) -> None:
    s = Synthesizer(
        SynthConfig(patch=48, flip_prob=1.0, rotation_deg=0, scaling=0, elastic_std_vox=0)
    )
    arr = toy_label_map().array.copy()
    arr[arr == 49] = 41  # only a left thalamus (label 10, at i ~ 30 = patient left)
    _, target, params = s.sample(arr, np.random.default_rng(1), size=(48, 48, 48))
    assert params["flip"]
    lut = target_lut()
    assert not (target == lut[10]).any()
    # the mirrored thalamus lies on the patient's right (small i) and is labelled right
    assert np.argwhere(target == lut[49]).mean(axis=0)[2] < 24
    # and the hemispheres stay anatomically labelled: left WM on the left
    assert np.argwhere(target == lut[2]).mean(axis=0)[2] > 24


@pytest.mark.parametrize("contrast", ["t1", "swi", "random"])
def test_render_covers_contrasts_and_thick_slices(synth: Synthesizer, contrast: str) -> None:
    lm = toy_label_map()
    img = synth.render(lm.array, np.random.default_rng(2), contrast, 5.0)
    assert img.shape == lm.array.shape and np.isfinite(img).all()


def test_swi_prior_makes_pallidum_darker_than_white_matter(synth: Synthesizer) -> None:
    arr = np.full((16, 16, 32), 2, np.int16)
    arr[:, :, 16:] = 13
    img = synth.render(arr, np.random.default_rng(3), "swi", None)
    assert img[:, :, 20:].mean() < img[:, :, :12].mean()


def test_train_a_few_steps_then_export_and_run(tmp_path: Path, shared_data: Path) -> None:
    cfg = TrainConfig(out=tmp_path / "run", seconds=120, max_iterations=2, threads=1, log_every=1)
    state = train(cfg, SynthConfig(patch=32), TINY_NET, label_maps=[toy_label_map()])
    assert state["iteration"] == 2
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2] and all(np.isfinite(r["loss"]) for r in log)
    # resume continues the iteration count
    cfg2 = TrainConfig(out=tmp_path / "run", seconds=120, max_iterations=3, threads=1, log_every=1)
    assert (
        train(cfg2, SynthConfig(patch=32), TINY_NET, [toy_label_map()], resume=True)["iteration"]
        == 3
    )

    out = export_checkpoint(tmp_path / "run" / "checkpoint.pt", tmp_path / "parcellation.onnx")
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["cmb.task"] == "parcellation"
    assert list(json.loads(props["cmb.labels"])) == [str(i) for i in LABEL_IDS]
    assert json.loads(props["cmb.normalization"]) == NORMALIZATION
    assert json.loads(props["cmb.trained_on"])["heldout_subjects"] == [17, 18, 19, 20]
    model = OnnxModel.load(out, device="cpu")
    assert model.metadata.spacing_mm == (2.0, 2.0, 2.0)
    assert model.metadata.output == "softmax"

    lm = toy_label_map()
    vol = Volume(array=lm.array.astype(np.float32), affine=lm.affine)
    labels = parcellate_onnx(vol, load_parcellation_model(out, "cpu"))
    assert labels.shape == vol.shape
    assert set(np.unique(labels.array).astype(int)) <= set(LABEL_IDS)


def test_cached_label_maps_are_on_the_canonical_grid(tmp_path: Path, shared_data: Path) -> None:
    (lm,) = load_label_maps((20,), cache_dir=tmp_path)
    assert lm.array.shape == (128, 128, 128)
    np.testing.assert_allclose(np.abs(lm.affine[:3, :3]), np.abs(np.diag([2.0, 2.0, 2.0]))[:, ::-1])
    assert (tmp_path / "seg_20_2mm.npz").is_file()
    # left thalamus lies at larger i (patient left) than the right one
    assert np.argwhere(lm.array == 10).mean(axis=0)[2] > np.argwhere(lm.array == 49).mean(axis=0)[2]
    (again,) = load_label_maps((20,), cache_dir=tmp_path)
    np.testing.assert_array_equal(again.array, lm.array)
