"""Tissue intensities: SWI-magnitude and T2*-GRE priors, or SynthSeg-style random contrasts.

Intensities are relative to cerebral white matter (= 1).  Priors follow the
appearance of clinical GRE images: CSF bright on T2* (long T2*), grey/white
contrast low and variable, iron-rich deep nuclei dark (pallidum darkest, then
putamen; substantia nigra, red nucleus and dentate are added as procedural
nuclei in :mod:`training.synth.iron`), bone and air black.  SWI magnitude is
phase-mask enhanced, so iron-rich structures are darker still and CSF less
bright than on T2*.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from training.synth.anatomy import MAX_LABEL
from training.synth.fields import smooth_field

TISSUE_LABELS: dict[str, tuple[int, ...]] = {
    "white_matter": (2, 41, 7, 46, 25, 57, 85),
    "cortex": (3, 42, 17, 18, 53, 54),
    "cerebellar_cortex": (8, 47),
    "csf": (4, 5, 14, 15, 24, 43, 44, 72, 136, 137, 163, 164),
    "thalamus": (10, 49),
    "caudate": (11, 50, 26, 58),
    "putamen": (12, 51),
    "pallidum": (13, 52),
    "ventral_dc": (28, 60),
    "brainstem": (16,),
    "vessel": (30, 62),
    "bone": (515,),
    "fat": (511,),
    "soft_tissue": (507, 502, 512),
    "muscle": (516, 514),
    "eye": (506,),
    "other": (508, 509, 530),
}

# (mean, relative std) per tissue and sequence.
PRIORS: dict[str, dict[str, tuple[float, float]]] = {
    "t2star": {
        "white_matter": (1.0, 0.0),
        "cortex": (1.25, 0.07),
        "cerebellar_cortex": (1.2, 0.07),
        "csf": (2.0, 0.1),
        "thalamus": (1.0, 0.05),
        "caudate": (1.1, 0.05),
        "putamen": (0.93, 0.07),
        "pallidum": (0.75, 0.1),
        "ventral_dc": (0.9, 0.08),
        "brainstem": (0.95, 0.05),
        "vessel": (0.45, 0.2),
        "bone": (0.06, 0.5),
        "fat": (1.2, 0.25),
        "soft_tissue": (0.7, 0.3),
        "muscle": (0.45, 0.25),
        "eye": (1.6, 0.2),
        "other": (0.5, 0.5),
    },
    "swi": {
        "white_matter": (1.0, 0.0),
        "cortex": (1.15, 0.07),
        "cerebellar_cortex": (1.1, 0.07),
        "csf": (1.4, 0.12),
        "thalamus": (0.95, 0.05),
        "caudate": (0.97, 0.05),
        "putamen": (0.8, 0.1),
        "pallidum": (0.55, 0.15),
        "ventral_dc": (0.8, 0.1),
        "brainstem": (0.9, 0.05),
        "vessel": (0.3, 0.3),
        "bone": (0.05, 0.5),
        "fat": (1.0, 0.3),
        "soft_tissue": (0.6, 0.3),
        "muscle": (0.4, 0.25),
        "eye": (1.3, 0.2),
        "other": (0.4, 0.5),
    },
}


def sample_tissue_means(rng: np.random.Generator, sequence: str, mode: str) -> dict[str, float]:
    """Draw one mean per tissue class: around the priors, or fully random (SynthSeg)."""
    out: dict[str, float] = {}
    for tissue in TISSUE_LABELS:
        mean, rel = PRIORS[sequence][tissue]
        if mode == "random" and tissue != "white_matter":
            out[tissue] = float(rng.uniform(0.1, 2.0))
        else:
            out[tissue] = float(max(0.02, mean * (1.0 + rel * rng.standard_normal())))
    return out


def intensity_lut(means: dict[str, float]) -> npt.NDArray[np.float32]:
    lut = np.zeros(MAX_LABEL, dtype=np.float32)
    for tissue, labels in TISSUE_LABELS.items():
        for label in labels:
            lut[label] = means[tissue]
    return lut


def render_tissue(
    labels: npt.NDArray[np.int16],
    means: dict[str, float],
    rng: np.random.Generator,
    texture_amplitude: float,
) -> npt.NDArray[np.float32]:
    """Piecewise-constant tissue image with smooth texture and softened label edges."""
    image = intensity_lut(means)[labels]
    texture = smooth_field(labels.shape, rng, (12, 12, 12))
    image *= 1.0 + np.float32(texture_amplitude) * texture
    # Label maps are 1 mm step functions: soften edges to mimic partial volume at 1 mm.
    return ndi.gaussian_filter(image, 0.5, truncate=2.0).astype(np.float32)
