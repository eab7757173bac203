"""Compare the fast sub-voxel dipole model with the full FFT model on a few cases.

``python -m training.synth.validate_dipole`` prints one Markdown table row per
case (the table in docs/synthetic-data.md).
"""

from __future__ import annotations

import numpy as np

from training.synth.dipole import (
    AcquisitionGrid,
    SusceptibilityObject,
    full_model_factor,
    object_factor,
)

B0 = np.array([0.0, 0.0, 1.0])
CASES = [
    # (semi-axes mm, chi ppm, B0 T, TE ms, voxel (slice, row, col) mm)
    ((0.75, 0.75, 0.75), 2.0, 3.0, 20.0, (1.0, 1.0, 1.0)),
    ((0.5, 0.5, 0.5), 3.0, 1.5, 25.0, (2.0, 0.8, 0.8)),
    ((1.08, 0.81, 0.84), 1.5, 3.0, 30.0, (3.0, 0.9, 0.9)),
    ((0.4, 0.4, 0.4), 4.0, 7.0, 15.0, (1.0, 0.5, 0.5)),
    ((1.5, 1.5, 1.5), 1.0, 1.5, 40.0, (5.0, 0.9, 0.9)),
]


def compare(
    axes: tuple[float, float, float],
    chi: float,
    b0_t: float,
    te: float,
    voxel: tuple[float, float, float],
    n: int = 11,
    fine_mm: float = 0.1,
) -> tuple[float, float, int, int]:
    rot = tuple(tuple(float(v) for v in r) for r in np.eye(3))
    obj = SusceptibilityObject((0.0, 0.0, 0.0), axes, rot, chi, 0.0)
    full = full_model_factor(obj, voxel, n, B0, b0_t, te, fine_mm=fine_mm)
    a = np.eye(4)
    a[:3, 0], a[:3, 1], a[:3, 2] = [0, 0, voxel[0]], [0, voxel[1], 0], [voxel[2], 0, 0]
    a[:3, 3] = -a[:3, :3] @ np.full(3, (n - 1) / 2)
    n_prof = max(2, int(np.ceil(voxel[0] / 0.2)))
    grid = AcquisitionGrid(
        (n, n, n), a, (np.arange(n_prof) + 0.5) / n_prof - 0.5, np.full(n_prof, 1.0 / n_prof)
    )
    out = object_factor(obj, grid, B0, b0_t, te)
    fast = np.ones((n, n, n), np.complex64)
    if out is not None:
        fast[out[0]] = out[1]
    d = np.abs(np.abs(fast) - np.abs(full))
    return (
        float(d.max()),
        float(d.mean()),
        int((np.abs(fast) < 0.6).sum()),
        int((np.abs(full) < 0.6).sum()),
    )


def main() -> None:
    print(
        "| semi-axes (mm) | chi (ppm) | B0 (T) | TE (ms) | voxel (mm) | max abs diff "
        "| mean abs diff | dark voxels fast / full |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for axes, chi, b0_t, te, voxel in CASES:
        mx, mean, nf, nr = compare(axes, chi, b0_t, te, voxel)
        print(f"| {axes} | {chi} | {b0_t} | {te} | {voxel} | {mx:.3f} | {mean:.4f} | {nf} / {nr} |")


if __name__ == "__main__":
    main()
