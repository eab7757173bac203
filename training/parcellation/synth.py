"""SynthSeg-style image synthesis from a label map (torch, CPU, 2 mm).

One sample = (image patch, target patch, parameters).  Steps, each drawn at
random and recorded in the parameters:

1. spatial: left/right flip (labels swapped), rotation, scaling, translation
   (the crop is centred on a random brain voxel) and a smooth elastic field,
   applied to the label map with nearest-neighbour sampling;
2. contrast: a Gaussian mixture, one mean and standard deviation per
   generation class (SynthSeg's ``generation_classes``: a few labels share a
   class, e.g. 4/5 and 17/18; left and right structures have separate ones).
   Either fully random (SynthSeg's uniform priors) or a jittered sequence
   prior (T1, T2, FLAIR, T2*-GRE, SWI: bright CSF on T2*, dark iron-rich
   pallidum/putamen and dark veins on SWI);
3. acquisition: in-plane blur, thick slices along one axis (blur with the
   slice profile, down- and up-sampling), noise, a smooth multiplicative bias
   field and a gamma;
4. normalization with THE preprocessing of the model
   (:func:`model.preprocess.normalize` with the exported spec).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from model.location.labels import MIRROR
from model.paths import shared_data_dir
from model.preprocess import normalize

#: The intensity normalization of the parcellation model (written into the ONNX metadata).
NORMALIZATION: dict[str, Any] = {
    "method": "percentile_minmax",
    "lower": 0.5,
    "upper": 99.5,
    "mask": "all",
}

SEQUENCES = ("t1", "t2", "flair", "t2star", "swi")

# Tissue of each label for the sequence priors.
_TISSUE_OF: dict[str, tuple[int, ...]] = {
    "wm": (2, 41, 7, 46, 16, 28, 60, 85),
    "gm": (3, 42, 8, 47, 17, 18, 53, 54, 26, 58, 11, 50, 25, 57, 136, 137, 163, 164),
    "thalamus": (10, 49),
    "putamen": (12, 51),
    "pallidum": (13, 52),
    "csf": (4, 5, 14, 15, 24, 43, 44, 72),
    "vessel": (30, 62),
    "background": (0,),
}
# Mean intensity (0..1) per tissue and sequence (non-brain tissue stays random).
_TISSUES = ("wm", "gm", "thalamus", "putamen", "pallidum", "csf", "vessel", "background")
_PRIOR_TABLE = {
    #          wm    gm    thal  put   pall  csf   vessel bg
    "t1":     (0.80, 0.55, 0.68, 0.62, 0.72, 0.15, 0.35, 0.02),
    "t2":     (0.35, 0.50, 0.42, 0.40, 0.30, 0.95, 0.10, 0.02),
    "flair":  (0.45, 0.60, 0.52, 0.55, 0.45, 0.06, 0.10, 0.02),
    "t2star": (0.45, 0.60, 0.50, 0.45, 0.30, 0.90, 0.12, 0.03),
    "swi":    (0.50, 0.55, 0.45, 0.35, 0.20, 0.75, 0.05, 0.03),
}  # fmt: skip
_PRIORS: dict[str, dict[str, float]] = {
    seq: dict(zip(_TISSUES, values, strict=True)) for seq, values in _PRIOR_TABLE.items()
}


@dataclass(frozen=True)
class SynthConfig:
    patch: int = 80
    spacing_mm: float = 2.0
    flip_prob: float = 0.5
    rotation_deg: float = 15.0
    scaling: float = 0.15
    elastic_std_vox: float = 1.5
    prior_prob: float = 0.6
    mean_jitter: float = 0.08
    max_std: float = 0.08
    max_blur_vox: float = 0.7
    thick_prob: float = 0.5
    thickness_mm: tuple[float, float] = (3.0, 7.0)
    noise_max: float = 0.06
    bias_std: float = 0.3
    gamma_std: float = 0.25

    def __post_init__(self) -> None:
        if self.patch <= 0 or self.patch % 16:
            raise ValueError(f"patch must be a positive multiple of 16, got {self.patch}")
        for name in ("flip_prob", "prior_prob", "thick_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")


def _generation_classes() -> dict[int, int]:
    folder = shared_data_dir() / "synthseg" / "data" / "labels_classes_priors"
    labels = np.load(folder / "generation_labels.npy").astype(int)
    classes = np.load(folder / "generation_classes.npy").astype(int)
    return dict(zip(labels.tolist(), classes.tolist(), strict=True))


class Synthesizer:
    """Draws (image, target) training pairs from label maps; seeded, parameters recorded."""

    def __init__(self, config: SynthConfig | None = None, max_label: int = 1024) -> None:
        from training.parcellation.labelmaps import target_lut

        self.config = config or SynthConfig()
        gen = _generation_classes()
        self.n_classes = max(gen.values()) + 1
        self.class_lut = np.zeros(max_label, dtype=np.int64)
        for label, cls in gen.items():
            self.class_lut[label] = cls
        tissue_of_label = {lab: t for t, labs in _TISSUE_OF.items() for lab in labs}
        self.class_tissue: dict[int, str | None] = {}
        for label, cls in gen.items():
            self.class_tissue.setdefault(cls, tissue_of_label.get(label))
        self.mirror_lut = np.arange(max_label, dtype=np.int64)
        for a, b in MIRROR.items():
            self.mirror_lut[a] = b
        self._target_lut_np = target_lut(max_label)
        self.target_lut = torch.from_numpy(self._target_lut_np)
        self._class_lut_t = torch.from_numpy(self.class_lut)

    # ------------------------------------------------------------------ spatial
    def _deform(
        self, labels: npt.NDArray[np.int16], rng: np.random.Generator, size: tuple[int, int, int]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg = self.config
        flip = bool(rng.random() < cfg.flip_prob)
        lab = labels.astype(np.int64)
        if flip:
            lab = self.mirror_lut[lab[:, :, ::-1]]
        src = torch.from_numpy(np.ascontiguousarray(lab)).float()[None, None]
        shape = np.asarray(lab.shape, dtype=np.float64)
        angles = rng.uniform(-1, 1, 3) * math.radians(cfg.rotation_deg)
        scale = 1.0 + rng.uniform(-1, 1, 3) * cfg.scaling
        rot = _rotation(angles)
        out = np.asarray(size, dtype=np.float64)
        # affine_grid works in (x, y, z) = (i, j, k) order of the normalised coordinates.
        ratio = (out / shape)[::-1]
        a = rot @ np.diag(1.0 / scale) @ np.diag(ratio)
        # The crop is centred on a random voxel of the labelled brain (channels
        # > 0).  Drawn over the whole grid, most patches held only air and scalp
        # (background) and the network learned to predict background everywhere.
        brain = np.argwhere(self._target_lut_np[lab] > 0)
        if brain.size:
            centre = brain[int(rng.integers(len(brain)))].astype(np.float64)
        else:
            centre = (shape - 1) / 2.0
        shift = ((2.0 * centre + 1.0) / shape - 1.0)[::-1]  # (x, y, z) normalised
        theta = torch.tensor(np.concatenate([a, shift[:, None]], axis=1), dtype=torch.float32)[None]
        grid = F.affine_grid(theta, [1, 1, *size], align_corners=False)
        if cfg.elastic_std_vox > 0:
            coarse = torch.from_numpy(rng.normal(0.0, 1.0, (1, 3, 5, 5, 5)).astype(np.float32))
            coarse = coarse * torch.tensor(
                cfg.elastic_std_vox * 2.0 / shape[::-1].copy(), dtype=torch.float32
            ).view(1, 3, 1, 1, 1)
            field = F.interpolate(coarse, size=size, mode="trilinear", align_corners=True)
            grid = grid + field.permute(0, 2, 3, 4, 1)
        warped = F.grid_sample(src, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        params = {
            "flip": flip,
            "rotation_deg": np.degrees(angles).round(2).tolist(),
            "scale": scale.round(3).tolist(),
            "shift": shift.round(3).tolist(),
        }
        return warped[0, 0].long(), params

    # ------------------------------------------------------------------ contrast
    def _intensities(
        self, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        cfg = self.config
        means = rng.uniform(0.0, 1.0, self.n_classes)
        stds = rng.uniform(0.0, cfg.max_std, self.n_classes)
        sequence = "random"
        if rng.random() < cfg.prior_prob:
            sequence = str(rng.choice(SEQUENCES))
            prior = _PRIORS[sequence]
            for cls, tissue in self.class_tissue.items():
                if tissue is not None:
                    means[cls] = np.clip(prior[tissue] + rng.normal(0.0, cfg.mean_jitter), 0.0, 1.0)
                    stds[cls] = rng.uniform(0.0, cfg.max_std / 2)
        return (
            torch.tensor(means, dtype=torch.float32),
            torch.tensor(stds, dtype=torch.float32),
            {"sequence": sequence},
        )

    # ------------------------------------------------------------------ acquisition
    def _acquire(
        self, image: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg = self.config
        x = image[None, None]
        size = tuple(image.shape)
        params: dict[str, Any] = {}
        sigmas = rng.uniform(0.0, cfg.max_blur_vox, 3)
        thickness = None
        axis = None
        if rng.random() < cfg.thick_prob:
            thickness = float(rng.uniform(*cfg.thickness_mm))
            axis = 0 if rng.random() < 0.7 else int(rng.integers(0, 3))
            factor = thickness / cfg.spacing_mm
            sigmas[axis] = factor / 2.355  # slice profile with FWHM = thickness
        x = _gaussian_blur(x, sigmas)
        if thickness is not None and axis is not None:
            low = list(size)
            low[axis] = max(2, round(size[axis] * cfg.spacing_mm / thickness))
            x = F.interpolate(x, size=tuple(low), mode="trilinear", align_corners=False)
            x = x + torch.randn_like(x) * float(rng.uniform(0.0, cfg.noise_max))
            x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
        else:
            x = x + torch.randn_like(x) * float(rng.uniform(0.0, cfg.noise_max))
        coarse = torch.from_numpy(rng.normal(0.0, cfg.bias_std, (1, 1, 4, 4, 4)).astype(np.float32))
        x = x.clamp_min(0.0) * torch.exp(
            F.interpolate(coarse, size=size, mode="trilinear", align_corners=True)
        )
        x = x / x.max().clamp_min(1e-6)
        gamma = float(np.exp(rng.normal(0.0, cfg.gamma_std)))
        x = x.clamp_min(0.0) ** gamma
        params.update(
            blur_vox=sigmas.round(2).tolist(),
            thickness_mm=thickness,
            thick_axis=axis,
            gamma=round(gamma, 3),
        )
        return x[0, 0], params

    def sample(
        self,
        labels: npt.NDArray[np.int16],
        rng: np.random.Generator,
        size: tuple[int, int, int] | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], dict[str, Any]]:
        """One (normalised image, channel target, parameters) of ``size`` (default: patch³)."""
        p = self.config.patch
        shape = size or (p, p, p)
        with torch.no_grad():
            lab, params = self._deform(labels, rng, shape)
            means, stds, contrast = self._intensities(rng)
            cls = self._class_lut_t[lab]
            image = means[cls] + stds[cls] * torch.randn(shape)
            image, acq = self._acquire(image, rng)
            target = self.target_lut[lab]
        params.update(contrast)
        params.update(acq)
        normed = normalize(image.numpy(), NORMALIZATION)
        return normed, target.numpy(), params

    def render(
        self,
        labels: npt.NDArray[np.int16],
        rng: np.random.Generator,
        sequence: str,
        thickness_mm: float | None,
    ) -> npt.NDArray[np.float32]:
        """A whole-grid image of ``labels`` (no deformation), given sequence and slice thickness.

        Used for the held-out evaluation, stratified by contrast and slice thickness.
        """
        shape = tuple(int(s) for s in labels.shape)
        with torch.no_grad():
            lab = torch.from_numpy(labels.astype(np.int64))
            means, stds, _ = self._intensities(np.random.default_rng(rng.integers(1 << 31)))
            if sequence != "random":
                prior = _PRIORS[sequence]
                for c, tissue in self.class_tissue.items():
                    if tissue is not None:
                        means[c] = float(
                            np.clip(prior[tissue] + rng.normal(0.0, self.config.mean_jitter), 0, 1)
                        )
                        stds[c] = float(rng.uniform(0.0, self.config.max_std / 2))
            cls = self._class_lut_t[lab]
            image = means[cls] + stds[cls] * torch.randn(shape)
            x = image[None, None]
            sig = np.full(3, 0.3)
            if thickness_mm is not None:
                f = thickness_mm / self.config.spacing_mm
                sig[0] = f / 2.355
                x = _gaussian_blur(x, sig)
                low = (max(2, round(shape[0] / f)), shape[1], shape[2])
                x = F.interpolate(x, size=low, mode="trilinear", align_corners=False)
                x = x + torch.randn_like(x) * 0.02
                x = F.interpolate(x, size=shape, mode="trilinear", align_corners=False)
            else:
                x = _gaussian_blur(x, sig) + torch.randn_like(x) * 0.02
            coarse = torch.from_numpy(rng.normal(0.0, 0.2, (1, 1, 4, 4, 4)).astype(np.float32))
            x = x.clamp_min(0.0) * torch.exp(
                F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)
            )
        return x[0, 0].numpy().astype(np.float32)


def config_dict(config: SynthConfig) -> dict[str, Any]:
    return asdict(config)


def _rotation(angles: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _gaussian_blur(x: torch.Tensor, sigmas: npt.NDArray[np.float64]) -> torch.Tensor:
    """Separable Gaussian blur of ``[1, 1, D, H, W]`` with one sigma (voxels) per axis."""
    for axis, sigma in enumerate(sigmas):
        if sigma < 0.2:
            continue
        radius = max(1, math.ceil(3 * sigma))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (t / float(sigma)) ** 2)
        k = k / k.sum()
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = radius
        pad[2 * (2 - axis) + 1] = radius
        x = F.conv3d(F.pad(x, pad, mode="replicate"), k.view(shape))
    return x
