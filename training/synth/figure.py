"""The docs figure: synthetic SWI and T2* cases across B0, TE and slice thickness.

``python -m training.synth.figure docs/synthetic-data.png`` (about a minute on
one core).  Each panel is the axial slice with the most microbleed voxels;
microbleed truth outlines are red, mimics within the slice are marked by kind.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from training.synth import generate_case

PANELS: list[tuple[str, dict[str, Any]]] = [
    (
        "SWI 1.5 T, TE 40 ms, 2.0 mm",
        {
            "sequence": "swi",
            "field_strength_t": 1.5,
            "echo_time_ms": 40.0,
            "slice_thickness_mm": 2.0,
        },
    ),
    (
        "SWI 3 T, TE 20 ms, 1.5 mm",
        {
            "sequence": "swi",
            "field_strength_t": 3.0,
            "echo_time_ms": 20.0,
            "slice_thickness_mm": 1.5,
        },
    ),
    (
        "SWI 7 T, TE 15 ms, 1.0 mm",
        {
            "sequence": "swi",
            "field_strength_t": 7.0,
            "echo_time_ms": 15.0,
            "slice_thickness_mm": 1.0,
        },
    ),
    (
        "T2* 1.5 T, TE 25 ms, 5 mm",
        {
            "sequence": "t2star",
            "field_strength_t": 1.5,
            "echo_time_ms": 25.0,
            "slice_thickness_mm": 5.0,
        },
    ),
    (
        "T2* 3 T, TE 20 ms, 3 mm",
        {
            "sequence": "t2star",
            "field_strength_t": 3.0,
            "echo_time_ms": 20.0,
            "slice_thickness_mm": 3.0,
        },
    ),
    (
        "T2* 3 T, TE 30 ms, 6 mm",
        {
            "sequence": "t2star",
            "field_strength_t": 3.0,
            "echo_time_ms": 30.0,
            "slice_thickness_mm": 6.0,
        },
    ),
]
MIMIC_STYLE = {
    "pallidal_calcification": ("c", "s"),
    "choroid_plexus_calcification": ("y", "D"),
    "pineal_calcification": ("m", "^"),
    "flow_void": ("b", "v"),
    "air_bone_artifact": ("orange", "X"),
    "cavernoma": ("lime", "P"),
    "haemorrhage": ("w", "*"),
}
ALL_MIMICS = tuple(MIMIC_STYLE)


def make_figure(path: str | Path, seed: int = 100) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 10.5), facecolor="black")
    for ax, (title, panel) in zip(axes.ravel(), PANELS, strict=True):
        override = {k: v for k, v in panel.items() if k != "sequence"}
        override.update(
            {
                "oblique_deg": (0.0, 0.0, 0.0),
                "head_rotation_deg": (0.0, 0.0, 0.0),
                "mimics": ALL_MIMICS,
                "snr": 25.0,
                "ghosting": 0.0,
                "contrast_mode": "prior",
                "pixel_spacing_mm": (0.7, 0.7) if panel["sequence"] == "swi" else (0.9, 0.9),
            }
        )
        case = generate_case(
            seed, subject=1, sequence=panel["sequence"], n_cmbs=12, params_override=override
        )
        img, lab = case.image.array, case.labels.array
        k = int(np.argmax(lab.reshape(lab.shape[0], -1).astype(bool).sum(1)))
        sl = img[k]
        vmax = float(np.percentile(img[img > 0], 99.5))
        ax.imshow(sl, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
        if lab[k].any():
            ax.contour(lab[k] > 0, levels=[0.5], colors="red", linewidths=0.8)
        step = case.image.spacing[0]
        for m in case.record["mimics"]:
            if m["kind"] == "vein":
                continue
            idx = case.image.lps_to_index(m["center_lps_mm"])
            if abs(idx[0] - k) * step <= max(step, m.get("diameter_mm", 2) / 2):
                colour, marker = MIMIC_STYLE[m["kind"]]
                ax.plot(
                    idx[2],
                    idx[1] - 6,
                    marker=marker,
                    color=colour,
                    markersize=6,
                    markeredgecolor="k",
                )
        n_cmb = len({int(v) for v in np.unique(lab[k]) if v})
        ax.set_title(
            f"{title}\n{n_cmb} CMB(s) on slice (red), markers = mimics", color="w", fontsize=10
        )
        ax.axis("off")
    handles = [
        plt.Line2D([], [], color=c, marker=mk, linestyle="", label=kind.replace("_", " "))
        for kind, (c, mk) in MIMIC_STYLE.items()
    ]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=4,
        facecolor="black",
        labelcolor="w",
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=90, facecolor="black")
    plt.close(fig)


if __name__ == "__main__":
    make_figure(sys.argv[1] if len(sys.argv) > 1 else "docs/synthetic-data.png")
