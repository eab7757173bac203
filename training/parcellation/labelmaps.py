"""The SynthSeg training label maps, on the canonical 2 mm grid, cached.

Each 1 mm whole-head map (256^3, RAS NIfTI) is resampled once, nearest
neighbour, onto the S/P/L-aligned grid of :mod:`model.location.grid` at the
network spacing and stored under ``runs/parcellation/cache`` (git-ignored);
later runs load the cache in a second.  Subjects 17-20 are held out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from model.location.grid import canonical_grid, empty_like_grid
from model.location.labels import LABEL_IDS
from model.location.parcellation import read_label_nifti
from model.paths import PROJECT_ROOT, shared_data_dir
from model.preprocess import resample_like
from model.types import Volume

TRAIN_SUBJECTS = tuple(range(1, 17))
HELDOUT_SUBJECTS = (17, 18, 19, 20)
DEFAULT_CACHE = PROJECT_ROOT / "runs" / "parcellation" / "cache"


@dataclass(frozen=True)
class LabelMap:
    subject: int
    array: npt.NDArray[np.int16]  # FreeSurfer ids incl. extra-cerebral generation labels
    affine: npt.NDArray[np.float64]  # (k, j, i, 1) -> LPS mm


def label_map_path(subject: int) -> Path:
    return (
        shared_data_dir()
        / "synthseg"
        / "data"
        / "training_label_maps"
        / f"training_seg_{subject:02d}.nii.gz"
    )


def to_canonical(volume: Volume, spacing_mm: float) -> LabelMap:
    affine, shape = canonical_grid(volume, spacing_mm, divisor=16)
    out = resample_like(volume, empty_like_grid(affine, shape), order=0)
    return LabelMap(0, np.rint(out.array).astype(np.int16), affine)


def load_label_maps(
    subjects: tuple[int, ...], spacing_mm: float = 2.0, cache_dir: Path | None = None
) -> list[LabelMap]:
    """Label maps of ``subjects`` on the canonical grid (cached as .npz)."""
    cache = cache_dir or DEFAULT_CACHE
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for s in subjects:
        f = cache / f"seg_{s:02d}_{spacing_mm:g}mm.npz"
        if f.is_file():
            with np.load(f) as z:
                out.append(LabelMap(s, z["array"], z["affine"]))
            continue
        lm = to_canonical(read_label_nifti(label_map_path(s)), spacing_mm)
        np.savez_compressed(f, array=lm.array, affine=lm.affine)
        out.append(LabelMap(s, lm.array, lm.affine))
    return out


def target_lut(max_label: int = 1024) -> npt.NDArray[np.int64]:
    """FreeSurfer id -> channel index of the network (labels it does not predict -> 0)."""
    lut = np.zeros(max_label, dtype=np.int64)
    for channel, label in enumerate(LABEL_IDS):
        lut[label] = channel
    return lut
