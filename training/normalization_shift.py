"""What a random contrast does to white matter in the network's input, per normalization mask.

The U-Net's input is the image normalized on its own statistics.  A random
draw of the tissue means (SynthSeg-style, ``cmb synth --random-contrast``)
changes those statistics, so white matter, the reference tissue that every
contrast keeps at 1, lands elsewhere in the network's input range, and a
CMB's depth below it is scaled by another factor
(docs/model-card.md, "A fresh test set, confidence intervals, and what blinds
the U-Net on random contrast").  This tool measures that move without a
network: each case (``cmb synth``'s seed and split, every case drawn with
random contrast) is generated twice, with its drawn means and with every
tissue at its sequence's prior (nothing else changes: same head, CMBs,
noise, bias field, texture; :func:`training.contrast_ablation.variants`),
and for each mask of ``--masks`` (``model.preprocess.MASKS``, under the
shipped U-Net's percentile z-score) and for the true brain (the anatomy's
brain labels, which no image-only mask has) it reports

* ``wm_clipped``: the share of white-matter voxels at or below the lower clip,
  drawn and prior variant: there a CMB, darker than white matter, has the
  value of the white matter around it and no network can see it;
* ``wm_shift``: the normalized white-matter median of the drawn variant minus
  that of the prior variant (z units);
* ``depth_ratio``: the prior variant's scale over the drawn one's, the factor
  by which the drawn contrast scales a CMB's normalized depth below white
  matter (1 is no change).

    python -m training.normalization_shift --seeds 800000-800019 --split val \\
        --masks otsu head --out runs/norm_shift.json

``--images FILE ...`` reports instead, for real images (NIfTI), what each mask
makes of them on the 1 mm model grid: its share of the voxels, the lower clip,
shift and scale (no anatomy, so no white matter).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.preprocess import (
    MASKS,
    foreground_mask,
    intensity_map,
    resample_like,
    resample_to_spacing,
)
from model.types import Volume
from model.volume import read_nifti
from training.contrast_ablation import variants
from training.synth.contrast import TISSUE_LABELS
from training.synth.engine import SynthCase, generate_case

#: The shipped U-Net's normalization, whose mask each row replaces.
BASE = {"method": "percentile_zscore", "lower": 0.5, "upper": 99.5, "mask": "otsu"}
#: Tissue classes of the brain itself (not CSF, vessels, or anything outside the brain).
BRAIN = (
    "white_matter",
    "cortex",
    "cerebellar_cortex",
    "thalamus",
    "caudate",
    "putamen",
    "pallidum",
    "ventral_dc",
    "brainstem",
)


def label_mask(labels: Volume, tissues: Sequence[str]) -> npt.NDArray[np.bool_]:
    """Voxels of ``labels`` (FreeSurfer) that belong to any of ``tissues``."""
    wanted = [label for t in tissues for label in TISSUE_LABELS[t]]
    return np.isin(labels.array.astype(np.int64), wanted)


TRUE_BRAIN = "true_brain"


def _grid_and_masks(
    case: SynthCase, spacing: tuple[float, float, float]
) -> tuple[Volume, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    if case.anatomy is None:
        raise ValueError(f"{case.case_id}: the case has no anatomy to find white matter in")
    grid = resample_to_spacing(case.image, spacing, order=1)
    labels = resample_like(case.anatomy, grid, order=0)
    return grid, label_mask(labels, ["white_matter"]), label_mask(labels, BRAIN)


def case_shift(
    drawn: SynthCase,
    prior: SynthCase,
    masks: Sequence[str],
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    base: Mapping[str, Any] = BASE,
) -> dict[str, dict[str, float]]:
    """``wm_clipped``, ``wm_shift`` and ``depth_ratio`` of each mask for one case's variants."""
    out: dict[str, dict[str, float]] = {}
    grids = [_grid_and_masks(c, spacing) for c in (drawn, prior)]
    for name in [*masks, TRUE_BRAIN]:
        spec = {**base, "mask": base["mask"] if name == TRUE_BRAIN else name}
        levels, scales, clipped = [], [], []
        for grid, wm, brain in grids:
            m = intensity_map(grid.array, spec, mask=brain if name == TRUE_BRAIN else None)
            levels.append(float(np.median(m.apply(grid.array)[wm])))
            scales.append(m.scale)
            clipped.append(float(np.mean(grid.array[wm] <= m.lower)))
        out[name] = {
            "wm_clipped_drawn": round(clipped[0], 4),
            "wm_clipped_prior": round(clipped[1], 4),
            "wm_shift": round(levels[0] - levels[1], 4),
            "depth_ratio": round(scales[1] / scales[0], 4),
        }
    return out


def measure(
    seeds: Sequence[int],
    split: str,
    masks: Sequence[str],
    *,
    override: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`case_shift` for every seed (random contrast), and its mean magnitude per mask."""
    cases: list[dict[str, Any]] = []
    base_override = dict(override or {})
    for seed in seeds:
        drawn = generate_case(
            seed, split=split, random_contrast=1.0, params_override=base_override or None
        )
        means = variants(drawn.params.tissue_means, drawn.params.sequence, tissues=[])
        prior = generate_case(
            seed,
            split=split,
            random_contrast=1.0,
            params_override={**base_override, "tissue_means": means["all_prior"]},
        )
        cases.append(
            {
                "case_id": drawn.case_id,
                "sequence": drawn.params.sequence,
                "masks": case_shift(drawn, prior, masks),
            }
        )
    summary = {}
    for name in [*masks, TRUE_BRAIN]:
        rows = [c["masks"][name] for c in cases]
        shifts = [abs(r["wm_shift"]) for r in rows]
        ratios = [abs(math.log2(r["depth_ratio"])) for r in rows]
        drawn_clip = [r["wm_clipped_drawn"] for r in rows]
        prior_clip = [r["wm_clipped_prior"] for r in rows]
        summary[name] = {
            "mean_wm_clipped_drawn": round(float(np.mean(drawn_clip)), 4),
            "max_wm_clipped_drawn": round(float(np.max(drawn_clip)), 4),
            "cases_wm_clipped_over_5pct": sum(c > 0.05 for c in drawn_clip),
            "mean_wm_clipped_prior": round(float(np.mean(prior_clip)), 4),
            "mean_abs_wm_shift": round(float(np.mean(shifts)), 4),
            "max_abs_wm_shift": round(float(np.max(shifts)), 4),
            "mean_abs_log2_depth_ratio": round(float(np.mean(ratios)), 4),
            "max_abs_log2_depth_ratio": round(float(np.max(ratios)), 4),
        }
    return {"split": split, "base": BASE, "cases": cases, "summary": summary}


def table(result: Mapping[str, Any]) -> str:
    """A markdown table of :func:`measure`'s summary."""
    lines = [
        f"{len(result['cases'])} random-contrast cases ({result['split']}), drawn vs prior means",
        "",
        "| statistics over | WM at the lower clip, drawn: mean (max), cases > 5 % | same, prior "
        "| abs WM shift, z: mean (max) | abs log2 depth ratio: mean (max) |",
        "|---|---|---|---|---|",
    ]
    for name, s in result["summary"].items():
        lines.append(
            f"| {name} | {s['mean_wm_clipped_drawn']:.3f} ({s['max_wm_clipped_drawn']:.3f}), "
            f"{s['cases_wm_clipped_over_5pct']} | {s['mean_wm_clipped_prior']:.3f} | "
            f"{s['mean_abs_wm_shift']:.3f} ({s['max_abs_wm_shift']:.3f}) | "
            f"{s['mean_abs_log2_depth_ratio']:.3f} ({s['max_abs_log2_depth_ratio']:.3f}) |"
        )
    return "\n".join(lines)


def image_maps(
    volume: Volume, masks: Sequence[str], spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> dict[str, dict[str, float]]:
    """Each mask's share of ``volume`` on the model grid, and the map it gives (:data:`BASE`)."""
    grid = resample_to_spacing(volume, spacing, order=1)
    out = {}
    for name in masks:
        mask = foreground_mask(grid.array, name)
        m = intensity_map(grid.array, {**BASE, "mask": name}, mask=mask)
        share = float(np.mean(mask))
        out[name] = {
            "mask_share": round(share, 4),
            "lower": round(float(m.lower), 3),
            "shift": round(m.shift, 3),
            "scale": round(m.scale, 3),
        }
    return out


def image_table(maps: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """A markdown table of :func:`image_maps` per image."""
    lines = [
        "| image | mask | share of voxels | lower clip | shift | scale |",
        "|---|---|---|---|---|---|",
    ]
    for image, per_mask in maps.items():
        for name, m in per_mask.items():
            lines.append(
                f"| {image} | {name} | {m['mask_share']:.3f} | {m['lower']:.6g} | "
                f"{m['shift']:.6g} | {m['scale']:.6g} |"
            )
    return "\n".join(lines)


def parse_seeds(text: str) -> list[int]:
    """``"5"``, ``"5-9"`` or ``"5,7,9-11"`` -> the seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds.extend(range(int(first), int(last or first) + 1))
    return seeds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--seeds", type=parse_seeds, help="e.g. 800000-800019")
    what.add_argument("--images", type=Path, nargs="+", help="NIfTI images instead")
    p.add_argument("--split", choices=("train", "val"), default="val")
    p.add_argument("--masks", nargs="+", choices=MASKS, default=["otsu", "head"])
    p.add_argument("--out", type=Path, help="also write the result as JSON")
    args = p.parse_args(argv)
    if args.images:
        result: dict[str, Any] = {
            str(path): image_maps(read_nifti(path), args.masks) for path in args.images
        }
        text = image_table(result)
    else:
        result = measure(args.seeds, args.split, args.masks)
        text = table(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
