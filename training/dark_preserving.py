"""Would the shipped U-Net see the sub-2 mm CMBs if its 1 mm grid kept them dark?

The model card's "How visible the missed CMBs are" finds most missed CMBs to
be dots a few voxels of 0.5-1 mm across, three or more standard deviations
darker than their surroundings; on a 0.7 mm U-Net grid the candidates hold
18 of the 21 darkest where the 1 mm grid holds 7.  The product resamples the
image to the U-Net's 1 mm grid linearly (:func:`model.preprocess.prepare`),
which averages such a dot with its neighbours or steps over it.  A minimum
filter before that resampling keeps it (:func:`model.preprocess.inplane_minimum`,
which a U-Net declaring ``cmb.input_filter`` gets in the product and in training).

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
measurement of a U-Net that does not declare the filter; one that declares it
(a training config's ``input_filter``) gets it on the original folder directly.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from model.preprocess import inplane_minimum
from model.volume import read_nifti, write_nifti
from training.datasets.layout import read_cases


def copy_folder(data: Path, out: Path, grid_mm: float) -> int:
    """Write ``out``: ``data``'s records, its label files linked, its images filtered.
    Returns the number of cases."""
    records = read_cases(data)
    out.mkdir(parents=True, exist_ok=True)
    grid = (grid_mm, grid_mm, grid_mm)
    for record in records:
        image = out / record["image"]
        image.parent.mkdir(parents=True, exist_ok=True)
        write_nifti(inplane_minimum(read_nifti(data / record["image"]), grid), image)
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
