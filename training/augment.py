"""Patch augmentation: geometry, MRI artefacts and contrast, on top of the synthetic variety.

Applied to training patches *after* the shared preprocessing
(``model.preprocess``), so the network sees normalized intensities exactly as
at inference, then perturbed.  Built from MONAI's dictionary transforms (affine,
elastic, bias field, Gaussian/Rician noise, k-space spikes, Gibbs ringing,
blur, low resolution, gamma, flips) and TorchIO's MRI-specific ones (motion,
ghosting, anisotropy) when TorchIO is installed (it is in the ``training``
extra).  Every transform draws from the global torch/numpy RNGs that the
training loop seeds, per worker.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai import transforms as mt

from training.errors import TrainingInputError

log = logging.getLogger(__name__)

Sample = dict[str, Any]


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (0 disables) and ranges of each augmentation."""

    enabled: bool = True
    p_affine: float = 0.3
    rotate_deg: float = 15.0
    scale: float = 0.15
    p_elastic: float = 0.05
    p_flip: float = 0.5
    p_bias: float = 0.3
    p_noise: float = 0.3
    noise_std: float = 0.1
    p_spike: float = 0.05
    p_gibbs: float = 0.1
    p_blur: float = 0.15
    p_lowres: float = 0.15
    p_gamma: float = 0.3
    p_motion: float = 0.05
    p_ghosting: float = 0.05
    p_anisotropy: float = 0.1

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if name.startswith("p_") and not 0.0 <= float(value) <= 1.0:
                raise TrainingInputError(f"augment.{name} must be in [0, 1], got {value}")


class _TorchioOnImage:
    """Apply a TorchIO transform to the ``image`` entry of a sample with probability ``p``."""

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor], p: float) -> None:
        self.transform = transform
        self.p = p

    def __call__(self, sample: Sample) -> Sample:
        if self.p <= 0 or np.random.random() >= self.p:
            return sample
        image = torch.as_tensor(sample["image"], dtype=torch.float32)
        out = dict(sample)
        out["image"] = torch.as_tensor(self.transform(image), dtype=torch.float32)
        return out


class _WhenDrawn(mt.Randomizable):
    """Apply a MONAI random transform (set to probability 1) with probability ``p``.

    MONAI's ``Rand3DElasticd`` resamples every key through an identity grid even
    when its own draw says no, so with ``p_elastic`` 0.05 the loaders paid for a
    resampling on 95 % of the patches for nothing: with every probability 0 a
    48^3 patch cost 98 ms ungated against 20 ms gated, and the defaults 163 ms
    against 71 ms (``bench/patch_loading.py``, docs/benchmarks.md section 8).
    Seeded with the rest of the pipeline (``set_random_state`` reaches the
    wrapped transform too), so a patch stays fixed by its seed.
    """

    def __init__(self, transform: mt.Randomizable, p: float) -> None:
        self.transform = transform
        self.p = p
        self._do = False

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> _WhenDrawn:
        super().set_random_state(seed, state)
        # its own stream: the gate's first draw must not also be the transform's
        inner_seed = None if seed is None else (int(seed) + 1) % 2**32
        self.transform.set_random_state(inner_seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self._do = self.p > 0 and self.R.random_sample() < self.p

    def __call__(self, sample: Sample) -> Sample:
        self.randomize()
        return self.transform(sample) if self._do else sample  # type: ignore[operator]


def _torchio_transforms(cfg: AugmentConfig) -> list[Callable[[Sample], Sample]]:
    try:
        import torchio as tio
    except ImportError:
        log.warning("TorchIO is not installed: no motion, ghosting or anisotropy augmentation")
        return []
    out: list[Callable[[Sample], Sample]] = []
    if cfg.p_motion > 0:
        out.append(
            _TorchioOnImage(
                tio.RandomMotion(degrees=5, translation=5, num_transforms=2), cfg.p_motion
            )
        )
    if cfg.p_ghosting > 0:
        out.append(
            _TorchioOnImage(
                tio.RandomGhosting(num_ghosts=(2, 6), intensity=(0.2, 0.6)), cfg.p_ghosting
            )
        )
    if cfg.p_anisotropy > 0:
        out.append(
            _TorchioOnImage(
                tio.RandomAnisotropy(axes=(0, 1, 2), downsampling=(1.5, 4)), cfg.p_anisotropy
            )
        )
    return out


def build_augmentation(cfg: AugmentConfig | None = None) -> Callable[[Sample], Sample]:
    """A callable mapping ``{"image": [1,D,H,W], "label": [1,D,H,W]}`` to an augmented copy.

    The label keeps its binary values (nearest-neighbour resampling); intensity
    transforms touch the image only.
    """
    c = cfg or AugmentConfig()
    keys = ["image", "label"]
    if not c.enabled:
        return mt.Compose([mt.EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False)])
    rot = math.radians(c.rotate_deg)
    steps: list[Any] = [
        mt.EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False),
        mt.RandAffined(
            keys=keys,
            prob=c.p_affine,
            rotate_range=(rot, rot, rot),
            scale_range=(c.scale, c.scale, c.scale),
            mode=("bilinear", "nearest"),
            padding_mode="reflection",
        ),
        _WhenDrawn(
            mt.Rand3DElasticd(
                keys=keys,
                prob=1.0,
                sigma_range=(5, 8),
                magnitude_range=(20, 60),
                mode=("bilinear", "nearest"),
                padding_mode="reflection",
            ),
            c.p_elastic,
        ),
        mt.RandFlipd(keys=keys, prob=c.p_flip, spatial_axis=0),
        mt.RandFlipd(keys=keys, prob=c.p_flip, spatial_axis=1),
        mt.RandFlipd(keys=keys, prob=c.p_flip, spatial_axis=2),
        mt.RandBiasFieldd(keys=["image"], prob=c.p_bias, coeff_range=(0.0, 0.3), degree=3),
        mt.RandGaussianSmoothd(
            keys=["image"],
            prob=c.p_blur,
            sigma_x=(0.25, 1.0),
            sigma_y=(0.25, 1.0),
            sigma_z=(0.25, 1.0),
        ),
        mt.RandSimulateLowResolutiond(keys=["image"], prob=c.p_lowres, zoom_range=(0.5, 0.9)),
        mt.RandGibbsNoised(keys=["image"], prob=c.p_gibbs, alpha=(0.0, 0.5)),
        mt.RandKSpaceSpikeNoised(keys=["image"], prob=c.p_spike, intensity_range=(9.0, 12.0)),
        *_torchio_transforms(c),
        mt.RandAdjustContrastd(keys=["image"], prob=c.p_gamma, gamma=(0.7, 1.5)),
        mt.RandGaussianNoised(keys=["image"], prob=c.p_noise, mean=0.0, std=c.noise_std),
        mt.EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False),
    ]
    return mt.Compose(steps)
