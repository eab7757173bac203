"""Would the shipped U-Net see the sub-2 mm CMBs if its 1 mm grid kept them dark?

The model card's "How visible the missed CMBs are" finds most missed CMBs to
be dots a few voxels of 0.5-1 mm across, three or more standard deviations
darker than their surroundings; on a 0.7 mm U-Net grid the candidates hold
18 of the 21 darkest where the 1 mm grid holds 7.  The product resamples the
image to the U-Net's 1 mm grid linearly (:func:`model.preprocess.prepare`),
which averages such a dot with its neighbours or steps over it.  A minimum
filter before that resampling keeps it: each in-plane axis finer than the
grid gets a footprint of ``ceil(grid / spacing) + 1`` voxels, wide enough that,
whatever the grids' phase, one output sample lies where the interpolation
reads only the dot's darkest value (at the price of thickening every dark
structure, veins included, by that many source voxels less one).

This tool writes a copy of a dataset folder whose images are so filtered
(labels linked, records unchanged).  Run ``filter_effect --cache`` on the
copy (the U-Net's candidates from the filtered image), then ``filter_effect
--replay`` of that cache on the original folder with the shipped classifier,
so that the classifier and the rules read the original image, as they would
if only the U-Net's input were filtered:

    python -m training.dark_preserving --data runs/data/val --out runs/data/val_min
    python -m training.parcellation.filter_effect --data runs/data/val_min \\
        --out runs/fe_min/val --cache runs/fc_min/val --threshold 0.68
    python -m training.parcellation.filter_effect --data runs/data/val --replay runs/fc_min/val \\
        --classifier model/weights/cmb_classifier.onnx --out runs/fe_min_replay/val \\
        --threshold 0.68

The parcellation comes from the cache, hence from the filtered image.  A
measurement only; the U-Net was never trained on such images.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from scipy import ndimage as ndi

from model.types import Volume
from model.volume import read_nifti, write_nifti
from training.datasets.layout import read_cases


def footprint(spacing_mm: tuple[float, float, float], grid_mm: float) -> tuple[int, int, int]:
    """The minimum filter's size per axis (slice, row, column): ``ceil(grid / spacing) + 1``
    in-plane where the spacing is finer than the grid, 1 elsewhere (the slice axis too)."""
    _, row, col = spacing_mm

    def size(s: float) -> int:
        return math.ceil(grid_mm / s - 1e-6) + 1 if s < grid_mm else 1

    return (1, size(row), size(col))


def min_filtered(volume: Volume, grid_mm: float) -> Volume:
    """``volume`` minimum-filtered in-plane for a U-Net grid of ``grid_mm``."""
    size = footprint(volume.spacing, grid_mm)
    if size == (1, 1, 1):
        return volume
    return volume.with_array(ndi.minimum_filter(volume.array, size=size, mode="nearest"))


def copy_folder(data: Path, out: Path, grid_mm: float) -> int:
    """Write ``out``: ``data``'s records, its label files linked, its images filtered.
    Returns the number of cases."""
    records = read_cases(data)
    out.mkdir(parents=True, exist_ok=True)
    for record in records:
        image = out / record["image"]
        image.parent.mkdir(parents=True, exist_ok=True)
        write_nifti(min_filtered(read_nifti(data / record["image"]), grid_mm), image)
        label = out / record["label"]
        label.parent.mkdir(parents=True, exist_ok=True)
        label.unlink(missing_ok=True)
        os.symlink((data / record["label"]).resolve(), label)
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    (out / "cases.jsonl").write_text(text)
    return len(records)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a dataset folder (cases.jsonl)")
    ap.add_argument("--out", type=Path, required=True, help="the filtered copy")
    ap.add_argument("--grid-mm", type=float, default=1.0, help="the U-Net's grid (mm)")
    args = ap.parse_args(argv)
    n = copy_folder(args.data, args.out, args.grid_mm)
    print(f"wrote {n} cases to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
