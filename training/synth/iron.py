"""Iron-rich nuclei that the label maps lack: red nucleus, substantia nigra, dentate.

They are dark on SWI and T2* (ferritin iron) and sit where microbleeds are
looked for in the brainstem and cerebellum; drawn as soft ellipsoids relative
to the brainstem and cerebellar white matter.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from training.synth.placement import Anatomy


def _darken(
    tissue: npt.NDArray[np.float32],
    anatomy: Anatomy,
    centre: npt.NDArray[np.float64],
    semi_axes: tuple[float, float, float],
    depth: float,
) -> None:
    inv = np.linalg.inv(anatomy.affine)
    c = inv[:3, :3] @ centre + inv[:3, 3]
    r = int(np.ceil(max(semi_axes))) + 2
    lo = np.maximum(np.floor(c).astype(int) - r, 0)
    hi = np.minimum(np.floor(c).astype(int) + r + 1, tissue.shape)
    if np.any(hi <= lo):
        return
    g = np.stack(np.meshgrid(*(np.arange(lo[a], hi[a]) for a in range(3)), indexing="ij"), -1)
    x = g @ anatomy.affine[:3, :3].T + anatomy.affine[:3, 3] - centre
    q = np.sqrt(np.sum((x / np.asarray(semi_axes)) ** 2, axis=-1))
    w = np.clip(1.5 - q, 0.0, 1.0)  # soft edge of about one semi-axis' third
    sl = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    tissue[sl] *= (1.0 - depth * w).astype(np.float32)


def render_iron_nuclei(
    anatomy: Anatomy, rng: np.random.Generator, tissue: npt.NDArray[np.float32], sequence: str
) -> None:
    """Darken red nuclei, substantia nigra and dentate nuclei in place."""
    scale = 1.3 if sequence == "swi" else 1.0
    stem = np.argwhere(anatomy.labels == 16)
    if len(stem):
        pts = anatomy.to_lps(stem)
        top = pts[:, 2].max()
        mid = pts[pts[:, 2] > top - 12]
        if len(mid):
            c = mid.mean(0)
            for side in (-1, 1):
                # LPS: x+ left, y+ posterior, z+ superior.
                rn = c + np.array([side * 3.5, 1.0, 0.0])
                _darken(tissue, anatomy, rn, (2.5, 2.5, 3.0), scale * rng.uniform(0.15, 0.35))
                sn = c + np.array([side * 8.0, -3.0, -1.0])
                _darken(tissue, anatomy, sn, (2.0, 4.0, 3.0), scale * rng.uniform(0.15, 0.3))
    for lab in (7, 46):
        c = anatomy.centroid((lab,))
        if c is not None:
            _darken(tissue, anatomy, c, (6.0, 4.0, 4.0), scale * rng.uniform(0.1, 0.3))
