"""Dice of the parcellation model on held-out synthetic images (subjects 17-20).

Every held-out label map is rendered (no deformation) with each contrast
(T1, T2*-GRE, SWI, fully random GMM) and each slice thickness (2 mm
isotropic, 5 mm axial slices), run through :func:`model.location.parcellate`
(the ONNX model, the production code path), and compared with the label map
label by label.  Writes ``metrics.json`` and an overlay PNG.

    .venv/bin/python -m training.parcellation.evaluate model/weights/parcellation.onnx \
        --out runs/parcellation/eval
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.location.labels import LABEL_IDS, name
from model.location.parcellation import load_parcellation_model, parcellate_onnx
from model.types import Volume
from training.parcellation.labelmaps import HELDOUT_SUBJECTS, load_label_maps, target_lut
from training.parcellation.synth import Synthesizer

CONTRASTS = ("t1", "t2star", "swi", "random")
THICKNESSES: tuple[float | None, ...] = (None, 5.0)
#: The large structures of the issue's target: cerebral WM and cortex, lateral
#: ventricles, thalamus, putamen, cerebellum cortex, brainstem.
LARGE = (2, 3, 41, 42, 4, 43, 10, 49, 12, 51, 8, 47, 16)


def dice(pred: npt.NDArray[np.int64], truth: npt.NDArray[np.int64], label: int) -> float | None:
    p, t = pred == label, truth == label
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return None
    return 2.0 * float((p & t).sum()) / denom


def evaluate(
    model_path: Path, out: Path, subjects: tuple[int, ...] = HELDOUT_SUBJECTS, seed: int = 17
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    model = load_parcellation_model(model_path, "cpu")
    synth = Synthesizer()
    ids = np.asarray(LABEL_IDS)
    lut = target_lut()
    rng = np.random.default_rng(seed)
    cases: list[dict[str, Any]] = []
    example: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64]] | None = (
        None
    )
    for lm in load_label_maps(subjects):
        truth = ids[lut[lm.array.astype(np.int64)]]
        for contrast in CONTRASTS:
            for thick in THICKNESSES:
                image = synth.render(lm.array, rng, contrast, thick)
                t0 = time.perf_counter()
                pred = np.rint(
                    parcellate_onnx(Volume(array=image, affine=lm.affine), model).array
                ).astype(np.int64)
                seconds = time.perf_counter() - t0
                per = {int(lab): dice(pred, truth, int(lab)) for lab in LABEL_IDS if lab != 0}
                large = [v for lab in LARGE if (v := per[lab]) is not None]
                cases.append(
                    {
                        "subject": lm.subject,
                        "contrast": contrast,
                        "thickness_mm": thick or 2.0,
                        "dice": per,
                        "mean_large": float(np.mean(large)),
                        "seconds": seconds,
                    }
                )
                if example is None and contrast == "swi" and thick is not None:
                    example = (image, truth, pred)
    summary = summarise(cases)
    (out / "metrics.json").write_text(json.dumps({"summary": summary, "cases": cases}, indent=1))
    if example is not None:
        overlay_png(*example, out / "overlay.png")
    return summary


def summarise(cases: list[dict[str, Any]]) -> dict[str, Any]:
    per_label: dict[str, float] = {}
    for lab in LABEL_IDS[1:]:
        vals = [c["dice"][lab] for c in cases if c["dice"][lab] is not None]
        if vals:
            per_label[f"{lab} {name(lab)}"] = round(float(np.mean(vals)), 3)
    by_contrast = {
        c: round(float(np.mean([x["mean_large"] for x in cases if x["contrast"] == c])), 3)
        for c in CONTRASTS
    }
    by_thick = {
        str(t or 2.0): round(
            float(np.mean([x["mean_large"] for x in cases if x["thickness_mm"] == (t or 2.0)])), 3
        )
        for t in THICKNESSES
    }
    return {
        "n_cases": len(cases),
        "mean_dice_large": round(float(np.mean([c["mean_large"] for c in cases])), 3),
        "mean_dice_all": round(float(np.mean(list(per_label.values()))), 3),
        "by_contrast_large": by_contrast,
        "by_thickness_large": by_thick,
        "per_label": per_label,
        "seconds_per_case_mean": round(float(np.mean([c["seconds"] for c in cases])), 2),
    }


def overlay_png(
    image: npt.NDArray[np.float32],
    truth: npt.NDArray[np.int64],
    pred: npt.NDArray[np.int64],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    rng = np.random.default_rng(3)
    colours = rng.uniform(0.2, 1.0, (int(max(LABEL_IDS)) + 1, 4))
    colours[:, 3] = 0.45
    colours[0] = (0, 0, 0, 0)
    cmap = ListedColormap(colours)
    k = int(np.argmax((truth == 10).sum(axis=(1, 2))))  # axial slice through the thalami
    i = truth.shape[2] // 2 + 12  # sagittal slice ~24 mm left of the grid centre
    views: list[tuple[str, tuple[Any, ...]]] = [
        ("axial", (k, slice(None), slice(None))),
        ("sagittal", (slice(None, None, -1), slice(None), i)),
    ]
    panels: list[tuple[npt.NDArray[np.int64] | None, str]] = [
        (None, "SWI-like, 5 mm slices"),
        (truth, "ground truth"),
        (pred, "prediction"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8))
    for row, (title, sl) in enumerate(views):
        for col, (lab, head) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(image[sl], cmap="gray")
            if lab is not None:
                ax.imshow(
                    lab[sl], cmap=cmap, vmin=0, vmax=len(colours) - 1, interpolation="nearest"
                )
            ax.set_title(f"{head} ({title})")
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("model", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--subjects", type=int, nargs="+", default=list(HELDOUT_SUBJECTS))
    a = p.parse_args(argv)
    if not set(a.subjects) <= set(HELDOUT_SUBJECTS):
        p.error(f"evaluate on held-out subjects only: {HELDOUT_SUBJECTS}")
    print(json.dumps(evaluate(a.model, a.out, tuple(a.subjects)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
