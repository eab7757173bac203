"""Network, loss, augmentation and config: shapes, gradients, validation of settings."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from training.augment import AugmentConfig, build_augmentation
from training.config import TrainConfig, config_from_dict, load_config
from training.losses import LossConfig, build_loss, small_cmb_weights
from training.network import NetworkConfig, ProbabilityHead, build_network, check_patch_size

TINY = NetworkConfig(features=(4, 4, 8, 8, 16, 4))


def test_network_keeps_spatial_shape_and_outputs_one_logit_channel() -> None:
    net = build_network(TINY).eval()
    x = torch.randn(2, 1, 32, 48, 16)
    with torch.no_grad():
        y = net(x)
        p = ProbabilityHead(net)(x)
    assert y.shape == (2, 1, 32, 48, 16)
    assert float(p.min()) >= 0.0
    assert float(p.max()) <= 1.0


def test_default_network_is_small_enough_to_ship() -> None:
    n = sum(p.numel() for p in build_network().parameters())
    assert n * 4 < 25e6  # float32 weights fit the 25 MB budget of model/weights


@pytest.mark.parametrize("bad", [{"features": (4, 4, 8)}, {"dropout": 1.5}, {"norm": "group"}])
def test_network_config_refuses_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError, match="must"):
        NetworkConfig(**bad)


def test_patch_size_must_be_a_multiple_of_16() -> None:
    assert check_patch_size([48, 48, 32]) == (48, 48, 32)
    with pytest.raises(ValueError, match="multiples of 16"):
        check_patch_size([40, 48, 48])


@pytest.mark.parametrize("kind", ["dice_bce", "dice_focal"])
def test_loss_is_low_for_a_perfect_prediction_and_high_for_all_background(kind: str) -> None:
    loss = build_loss(LossConfig(kind=kind))
    target = torch.zeros(2, 1, 16, 16, 16)
    target[0, 0, 6:9, 6:9, 6:9] = 1
    perfect = (target * 2 - 1) * 20  # logits
    background = torch.full_like(target, -20.0)
    assert float(loss(perfect, target)) < 0.01
    assert float(loss(background, target)) > 0.9
    # batch Dice: a batch of negative patches is defined and near 0 when predicted negative
    assert float(loss(background, torch.zeros_like(target))) < 0.01


def test_positive_weight_pulls_saturated_cmb_voxels_up() -> None:
    """All-background logits: BCE with pos_weight gives CMB voxels a strong gradient."""
    target = torch.zeros(1, 1, 32, 32, 32)
    target[0, 0, 10:13, 10:13, 10:13] = 1
    grads = {}
    for kind in ("dice_bce", "dice_focal"):
        logits = torch.full_like(target, -6.0, requires_grad=True)
        build_loss(LossConfig(kind=kind))(logits, target).backward()
        assert logits.grad is not None
        grads[kind] = float(-logits.grad[target > 0].mean())
    assert grads["dice_bce"] > 5 * grads["dice_focal"] > 0
    with pytest.raises(ValueError, match="pos_weight"):
        LossConfig(pos_weight=0)
    with pytest.raises(ValueError, match="kind"):
        LossConfig(kind="ce")


def test_small_cmb_weights_give_each_small_cmb_the_weight_of_a_reference_one() -> None:
    target = torch.zeros(2, 1, 16, 16, 16)
    target[0, 0, 2, 2, 2] = 1  # 1 voxel
    target[0, 0, 8:10, 8, 8] = 1  # 2 voxels
    target[1, 0, 4:8, 4:8, 4:8] = 1  # 64 voxels: larger than the reference
    factor = small_cmb_weights(target, 14.0)
    assert float(factor[0, 0, 2, 2, 2]) == pytest.approx(14.0)
    assert float(factor[0, 0, 8, 8, 8]) == pytest.approx(7.0)
    assert float(factor[0, 0, 9, 8, 8]) == pytest.approx(7.0)
    assert float(factor[1, 0, 5, 5, 5]) == pytest.approx(1.0)
    # each small CMB now carries the summed weight of a 14-voxel one
    assert float((factor * target)[0].sum()) == pytest.approx(28.0)
    assert float(factor[target == 0].max()) == 1.0


def test_small_cmb_voxels_off_is_the_plain_weighted_bce_and_on_pulls_small_cmbs_harder() -> None:
    target = torch.zeros(1, 1, 16, 16, 16)
    target[0, 0, 3, 3, 3] = 1  # a 1-voxel CMB
    target[0, 0, 8:12, 8:12, 8:12] = 1  # a 64-voxel one
    logits = torch.randn_like(target)
    plain = build_loss(LossConfig(dice_weight=0.0))
    reference = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target, pos_weight=torch.tensor([20.0])
    )
    assert float(plain(logits, target)) == pytest.approx(float(reference), rel=1e-6)
    # with a reference below every CMB's size the weighted path equals the plain BCE
    assert float(
        build_loss(LossConfig(dice_weight=0.0, small_cmb_voxels=1.0))(logits, target)
    ) == pytest.approx(float(reference), rel=1e-5)
    grads = {}
    for voxels in (0.0, 14.0):
        leaf = torch.full_like(target, -4.0, requires_grad=True)
        build_loss(LossConfig(small_cmb_voxels=voxels))(leaf, target).backward()
        assert leaf.grad is not None
        grads[voxels] = (float(-leaf.grad[0, 0, 3, 3, 3]), float(-leaf.grad[0, 0, 9, 9, 9]))
    assert grads[14.0][0] > 10 * grads[0.0][0]  # the 1-voxel CMB: ~14x the pull
    assert grads[14.0][1] == pytest.approx(grads[0.0][1], rel=1e-4)  # the large one: unchanged
    with pytest.raises(ValueError, match="small_cmb_voxels"):
        LossConfig(small_cmb_voxels=-1)
    with pytest.raises(ValueError, match="dice_bce"):
        LossConfig(kind="dice_focal", small_cmb_voxels=14)


def test_loss_gradient_reaches_the_network() -> None:
    net = build_network(TINY)
    x = torch.randn(1, 1, 32, 32, 32)
    y = (torch.rand(1, 1, 32, 32, 32) > 0.95).float()
    build_loss()(net(x), y).backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads
    assert any(float(g.abs().sum()) > 0 for g in grads)


def test_augmentation_keeps_shapes_and_binary_labels_with_every_transform_on() -> None:
    always: dict[str, Any] = {
        k: 1.0 for k in AugmentConfig.__dataclass_fields__ if k.startswith("p_")
    }
    aug = build_augmentation(AugmentConfig(**always))
    label = np.zeros((1, 32, 32, 32), dtype=np.float32)
    label[0, 14:18, 14:18, 14:18] = 1
    sample = {
        "image": np.random.default_rng(0).normal(size=(1, 32, 32, 32)).astype(np.float32),
        "label": label,
    }
    out = aug(sample)
    assert tuple(out["image"].shape) == (1, 32, 32, 32)
    assert tuple(out["label"].shape) == (1, 32, 32, 32)
    assert set(np.unique(np.asarray(out["label"]))) <= {0.0, 1.0}
    assert torch.isfinite(torch.as_tensor(out["image"])).all()
    assert not np.allclose(np.asarray(out["image"]), sample["image"])


def test_disabled_augmentation_is_identity() -> None:
    aug = build_augmentation(AugmentConfig(enabled=False))
    image = np.random.default_rng(1).normal(size=(1, 16, 16, 16)).astype(np.float32)
    out = aug({"image": image, "label": np.zeros_like(image)})
    np.testing.assert_array_equal(np.asarray(out["image"]), image)


def test_augment_config_refuses_probabilities_outside_0_1() -> None:
    with pytest.raises(ValueError, match="p_noise"):
        AugmentConfig(p_noise=1.5)


def test_config_round_trips_through_json_and_refuses_unknown_keys(tmp_path) -> None:
    cfg = config_from_dict({"optim": {"epochs": 3}, "network": {"features": [4, 4, 8, 8, 16, 4]}})
    assert cfg.optim.epochs == 3
    assert cfg.network.features == (4, 4, 8, 8, 16, 4)
    path = tmp_path / "c.json"
    path.write_text(cfg.to_json())
    again = load_config(path)
    assert again == cfg
    assert again.config_hash() == cfg.config_hash()
    assert cfg.config_hash() != TrainConfig().config_hash()
    with pytest.raises(ValueError, match="epoch"):
        config_from_dict({"optim": {"epoch": 3}})
    path.write_text(json.dumps({"patch_size": [40, 40, 40]}))
    with pytest.raises(ValueError, match="multiples"):
        load_config(path)


def _patch_sample(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    label = np.zeros((1, 24, 24, 24), dtype=np.float32)
    label[0, 10:13, 10:13, 10:13] = 1
    return {"image": rng.normal(size=(1, 24, 24, 24)).astype(np.float32), "label": label}


def test_elastic_gate_passes_undrawn_patches_through_untouched() -> None:
    """p_elastic 0: no identity-grid resampling (MONAI's own prob check still resamples)."""
    from training.augment import _WhenDrawn

    none: dict[str, Any] = {k: 0.0 for k in AugmentConfig.__dataclass_fields__ if k[:2] == "p_"}
    composed: Any = build_augmentation(AugmentConfig(**none))  # MONAI's Compose
    gate = next(t for t in composed.transforms if isinstance(t, _WhenDrawn))
    sample = _patch_sample(2)
    assert gate(sample) is sample
    gate.p = 1.0
    out = gate(dict(sample))
    assert not np.allclose(np.asarray(out["image"]), sample["image"])
    assert set(np.unique(np.asarray(out["label"]))) <= {0.0, 1.0}


def test_augmentation_is_fixed_by_its_seed_elastic_included() -> None:
    always: dict[str, Any] = {k: 1.0 for k in AugmentConfig.__dataclass_fields__ if k[:2] == "p_"}
    outs = []
    for seed in (7, 7, 8):
        aug: Any = build_augmentation(AugmentConfig(**always))  # MONAI's Compose
        aug.set_random_state(seed=seed)
        np.random.seed(seed)  # TorchIO's transforms draw from the global generators
        torch.manual_seed(seed)
        outs.append(np.asarray(aug(_patch_sample(3))["image"]))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.allclose(outs[0], outs[2])
