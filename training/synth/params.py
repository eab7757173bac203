"""Every randomly drawn parameter of a synthetic case, sampled once and recorded.

The generator first draws a :class:`SynthParams` from a seeded generator, then
applies it deterministically (TorchIO's RandomX -> X split): the same params
always give the same case, and the params are written to ``cases.jsonl`` so the
evaluation can stratify by any of them.  ``params_override`` replaces drawn
values by name (unknown names are an error).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEQUENCES = ("swi", "t2star")
CMB_PATTERNS = ("none", "scattered", "lobar_cluster", "deep", "multiple_tiny")
# MARS proportions per pattern: (lobar, deep, infratentorial).  "scattered" follows
# population cohorts (Rotterdam Scan Study: roughly half lobar, a third deep).
MARS_PROPORTIONS: dict[str, tuple[float, float, float]] = {
    "scattered": (0.50, 0.35, 0.15),
    "lobar_cluster": (1.0, 0.0, 0.0),
    "deep": (0.15, 0.70, 0.15),
    "multiple_tiny": (0.45, 0.40, 0.15),
}
MANUFACTURERS = {
    "swi": ("SIEMENS", "Philips", "GE MEDICAL SYSTEMS"),
    "t2star": ("SIEMENS", "Philips", "GE MEDICAL SYSTEMS"),
}


@dataclass
class SynthParams:
    """All parameters of one case (units in the names; angles in degrees, chi in ppm SI)."""

    seed: int
    subject: int
    split: str
    sequence: str  # "swi" | "t2star"
    # anatomy / geometry
    flip_lr: bool = False
    elastic_sigma_mm: float = 0.0
    elastic_spacing_mm: float = 24.0
    head_rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    head_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    head_shear: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pitch_correction_deg: float = 0.0  # per subject, not random: brings the map near AC-PC
    # contrast
    contrast_mode: str = "prior"  # "prior" | "random"
    tissue_means: dict[str, float] = field(default_factory=dict)
    texture_amplitude: float = 0.03
    # acquisition
    field_strength_t: float = 3.0
    echo_time_ms: float = 20.0
    acquisition_type: str = "3D"
    pixel_spacing_mm: tuple[float, float] = (0.8, 0.8)
    slice_thickness_mm: float = 1.5
    slice_gap_mm: float = 0.0
    slice_profile: str = "box"  # "box" (3D) | "hann" (2D selective excitation)
    n_subslices: int = 2
    oblique_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    manufacturer: str | None = None
    phase_mask_power: int = 0  # SWI: 4 (Haacke); 0 = plain magnitude
    snr: float = 20.0
    bias: float = 0.2
    kspace_fraction: float = 1.0  # <1: in-plane k-space truncation -> Gibbs ringing
    ghosting: float = 0.0  # std (rad) of random k-space line phase errors (motion)
    phase_encode_axis: int = 1  # 1 = rows, 2 = columns of the image
    intensity_scale: float = 1000.0
    # vessels and mimics
    vein_chi_ppm: float = 0.45
    n_medullary_veins: int = 60
    n_cortical_veins: int = 25
    deep_veins: bool = True
    mimics: tuple[str, ...] = ()
    # microbleeds
    cmb_pattern: str = "scattered"
    n_cmbs: int = 0
    cmb_diameter_range_mm: tuple[float, float] = (0.5, 5.0)
    cmb_chi_range_ppm: tuple[float, float] = (1.0, 6.0)
    truth_threshold: float = 0.4  # relative signal loss that a rater calls lesion

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = list(v)
            if isinstance(v, float):
                v = round(v, 5)
            out[f.name] = v
        return out


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _sample_field_te(rng: np.random.Generator, sequence: str) -> tuple[float, float]:
    if sequence == "swi":
        b0 = float(rng.choice([1.5, 3.0, 7.0], p=[0.3, 0.6, 0.1]))
        te = {1.5: _u(rng, 25, 40), 3.0: _u(rng, 15, 30), 7.0: _u(rng, 10, 20)}[b0]
    else:
        b0 = float(rng.choice([1.5, 3.0], p=[0.5, 0.5]))
        te = {1.5: _u(rng, 15, 40), 3.0: _u(rng, 10, 30)}[b0]
    return b0, te


def _sample_mimics(rng: np.random.Generator) -> tuple[str, ...]:
    probs = {
        "pallidal_calcification": 0.30,
        "choroid_plexus_calcification": 0.35,
        "pineal_calcification": 0.35,
        "flow_void": 0.40,
        "air_bone_artifact": 0.50,
        "cavernoma": 0.08,
        "haemorrhage": 0.06,
    }
    return tuple(k for k, p in probs.items() if rng.random() < p)


#: Default share of cases with random tissue contrast (``contrast_mode`` "random").
RANDOM_CONTRAST_SHARE = 0.2


def sample_params(
    rng: np.random.Generator,
    *,
    seed: int,
    subject: int,
    split: str,
    sequence: str,
    n_cmbs: int | None = None,
    override: dict[str, Any] | None = None,
    random_contrast: float = RANDOM_CONTRAST_SHARE,
) -> SynthParams:
    """Draw one case's parameters; ``sequence`` may be "swi", "t2star" or "mixed".

    ``random_contrast`` is the probability of SynthSeg-style random tissue means
    instead of the sequence's priors.  It changes no other draw: a case keeps
    every other parameter whatever the share, and the cases that are random at
    a smaller share stay random at a larger one.
    """
    if not 0.0 <= random_contrast <= 1.0:
        raise ValueError(f"random_contrast must be within [0, 1], got {random_contrast}")
    if sequence == "mixed":
        sequence = str(rng.choice(SEQUENCES))
    if sequence not in SEQUENCES:
        raise ValueError(f"sequence must be one of swi, t2star, mixed; got {sequence!r}")
    p = SynthParams(seed=seed, subject=subject, split=split, sequence=sequence)
    p.flip_lr = bool(rng.random() < 0.5)
    p.elastic_sigma_mm = _u(rng, 0.0, 2.5)
    p.head_rotation_deg = tuple(_u(rng, -8, 8) for _ in range(3))  # type: ignore[assignment]
    p.head_scale = tuple(_u(rng, 0.92, 1.08) for _ in range(3))  # type: ignore[assignment]
    p.head_shear = tuple(_u(rng, -0.03, 0.03) for _ in range(3))  # type: ignore[assignment]
    p.contrast_mode = "random" if rng.random() < random_contrast else "prior"
    p.texture_amplitude = _u(rng, 0.0, 0.06)
    p.field_strength_t, p.echo_time_ms = _sample_field_te(rng, sequence)
    if sequence == "swi":
        p.acquisition_type = "3D"
        ps = _u(rng, 0.5, 1.0)
        p.pixel_spacing_mm = (ps, ps)
        p.slice_thickness_mm = _u(rng, 1.0, 2.5)
        p.slice_gap_mm = 0.0
        p.slice_profile = "box"
        p.phase_mask_power = 4
    else:
        p.acquisition_type = "2D"
        ps = _u(rng, 0.7, 1.0)
        p.pixel_spacing_mm = (ps, ps)
        p.slice_thickness_mm = _u(rng, 3.0, 6.0)
        p.slice_gap_mm = _u(rng, 0.0, 0.3) * p.slice_thickness_mm if rng.random() < 0.6 else 0.0
        p.slice_profile = "hann"
        p.phase_mask_power = 0
    p.n_subslices = max(2, int(np.ceil(p.slice_thickness_mm / 0.75)))
    p.oblique_deg = (_u(rng, -20, 20), _u(rng, -5, 5), _u(rng, -5, 5))
    p.manufacturer = str(rng.choice(MANUFACTURERS[sequence]))
    p.snr = float(np.exp(rng.uniform(np.log(8), np.log(40))))
    p.bias = _u(rng, 0.0, 0.4)
    p.kspace_fraction = _u(rng, 0.6, 0.95) if rng.random() < 0.5 else 1.0
    p.ghosting = _u(rng, 0.05, 0.4) if rng.random() < 0.25 else 0.0
    p.phase_encode_axis = int(rng.choice([1, 2]))
    p.intensity_scale = float(np.exp(rng.uniform(np.log(200), np.log(3000))))
    p.vein_chi_ppm = _u(rng, 0.3, 0.6)
    p.n_medullary_veins = int(rng.integers(200, 500))
    p.n_cortical_veins = int(rng.integers(30, 80))
    p.deep_veins = True
    p.mimics = _sample_mimics(rng)
    # microbleeds
    if n_cmbs is None:
        if rng.random() < 0.35:
            n_cmbs = 0
        elif rng.random() < 0.12:
            n_cmbs = int(rng.integers(10, 41))
        else:
            n_cmbs = int(min(1 + rng.geometric(0.35), 9))
    p.n_cmbs = int(n_cmbs)
    if p.n_cmbs == 0:
        p.cmb_pattern = "none"
    else:
        p.cmb_pattern = str(
            rng.choice(
                ["scattered", "lobar_cluster", "deep", "multiple_tiny"], p=[0.5, 0.2, 0.2, 0.1]
            )
        )
    if p.cmb_pattern == "multiple_tiny":
        p.cmb_diameter_range_mm = (0.5, 1.5)
    if override:
        names = {f.name for f in dataclasses.fields(SynthParams)}
        unknown = sorted(set(override) - names)
        if unknown:
            raise ValueError(f"unknown SynthParams field(s) in params_override: {unknown}")
        for k, v in override.items():
            setattr(p, k, tuple(v) if isinstance(v, list) else v)
        if "slice_thickness_mm" in override and "n_subslices" not in override:
            p.n_subslices = max(2, int(np.ceil(p.slice_thickness_mm / 0.75)))
        if (
            "n_cmbs" in override
            and "cmb_pattern" not in override
            and p.n_cmbs > 0
            and p.cmb_pattern == "none"
        ):
            p.cmb_pattern = "scattered"
    return p
