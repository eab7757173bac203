"""Smooth random fields (bias, texture, elastic displacement) from a low-order cosine basis.

``scipy.ndimage.zoom`` of a coarse noise grid costs seconds per 7-megavoxel
volume on one core; a separable sum of a few cosines per axis costs a few
tensor products and is just as smooth.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def _basis(n: int, order: int) -> npt.NDArray[np.float32]:
    x = (np.arange(n) + 0.5) / n
    return np.stack([np.cos(np.pi * f * x) for f in range(order)]).astype(np.float32)


def smooth_field(
    shape: tuple[int, ...], rng: np.random.Generator, orders: tuple[int, int, int]
) -> npt.NDArray[np.float32]:
    """Zero-mean, unit-std random field with ``orders`` cosines per axis (1/f-weighted)."""
    a, b, c = orders
    coef = rng.standard_normal((a, b, c)).astype(np.float32)
    fa, fb, fc = np.meshgrid(np.arange(a), np.arange(b), np.arange(c), indexing="ij")
    coef /= 1.0 + np.sqrt(fa**2 + fb**2 + fc**2).astype(np.float32)
    coef[0, 0, 0] = 0.0
    bk, bj, bi = _basis(shape[0], a), _basis(shape[1], b), _basis(shape[2], c)
    t = np.tensordot(coef, bi, axes=(2, 0))  # (a, b, Ni)
    t = np.tensordot(t, bj, axes=(1, 0))  # (a, Ni, Nj)
    field = np.tensordot(bk, t, axes=(0, 0))  # (Nk, Ni, Nj)
    field = np.ascontiguousarray(field.transpose(0, 2, 1))
    std = float(field.std())
    return (field / std if std > 0 else field).astype(np.float32)
