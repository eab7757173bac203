"""Loss for extreme class imbalance: soft Dice plus a voxel-wise term on one sigmoid channel.

A 48³ patch holds ~110 000 voxels and a microbleed a few dozen, so plain
cross-entropy learns "all background".  Dice (computed over the whole batch,
not per patch, with a smoothing of one voxel, so that negative patches do not
produce a 0/0 Dice) rewards overlap.  The voxel-wise term is either

* ``dice_bce`` (default): binary cross-entropy with ``pos_weight`` on CMB
  voxels.  Measured in this project: with Dice + focal (γ = 2) a CPU run sat
  at loss 1.00 (all background) for 300 iterations, because once the sigmoid
  saturates near 0 neither the Dice gradient (× p(1-p)) nor the focal term
  (averaged over 10⁵ background voxels) pulls the few CMB voxels up; a
  positive weight keeps that pull;
* ``dice_focal``: MONAI's Dice + focal loss (``focal_gamma``, ``focal_alpha``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.losses import DiceFocalLoss, DiceLoss

KINDS = ("dice_bce", "dice_focal")


@dataclass(frozen=True)
class LossConfig:
    kind: str = "dice_bce"
    dice_weight: float = 1.0
    #: weight of the voxel-wise term (BCE or focal)
    focal_weight: float = 1.0
    #: BCE weight of CMB voxels relative to background voxels (dice_bce)
    pos_weight: float = 20.0
    focal_gamma: float = 2.0
    focal_alpha: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"loss.kind must be one of {KINDS}, got {self.kind!r}")
        if self.dice_weight < 0 or self.focal_weight < 0:
            raise ValueError("loss weights must be non-negative")
        if self.dice_weight == 0 and self.focal_weight == 0:
            raise ValueError("at least one of dice_weight and focal_weight must be positive")
        if self.pos_weight <= 0:
            raise ValueError(f"loss.pos_weight must be positive, got {self.pos_weight}")
        if self.focal_alpha is not None and not 0.0 <= self.focal_alpha <= 1.0:
            raise ValueError(f"focal_alpha must be in [0, 1], got {self.focal_alpha}")


class DiceBCELoss(torch.nn.Module):
    """Batch soft Dice on sigmoid(logits) + BCE with a weight on positive voxels."""

    def __init__(self, dice_weight: float, bce_weight: float, pos_weight: float) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=True, batch=True, smooth_nr=1.0, smooth_dr=1.0)
        self.dice_weight = dice_weight
        self.bce_weight = bce_weight
        self.pos_weight = float(pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            logits,
            target,
            pos_weight=torch.tensor([self.pos_weight], dtype=logits.dtype, device=logits.device),
        )
        return self.dice_weight * self.dice(logits, target) + self.bce_weight * bce


def build_loss(config: LossConfig | None = None) -> torch.nn.Module:
    """Loss taking logits ``[N, 1, D, H, W]`` and a binary target of the same shape."""
    cfg = config or LossConfig()
    if cfg.kind == "dice_bce":
        return DiceBCELoss(cfg.dice_weight, cfg.focal_weight, cfg.pos_weight)
    return DiceFocalLoss(
        sigmoid=True,
        batch=True,  # one Dice over the batch: negative patches contribute, no 0/0
        smooth_nr=1.0,  # a batch without CMBs predicted empty scores ~0, not 0/0
        smooth_dr=1.0,
        gamma=cfg.focal_gamma,
        alpha=cfg.focal_alpha,
        lambda_dice=cfg.dice_weight,
        lambda_focal=cfg.focal_weight,
    )
