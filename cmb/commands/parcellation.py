"""`cmb parcellate INPUT --out LABELS`: brain label map (FreeSurfer ids) of a NIfTI image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "parcellate",
        help="brain parcellation (SynthSeg labels) of a NIfTI image",
        description=(
            "Label a brain MRI of any contrast with the SynthSeg structures (FreeSurfer ids) "
            "using the shipped ONNX network, or FreeSurfer's mri_synthseg; the label map is "
            "written on the input's grid."
        ),
    )
    p.add_argument("input", type=Path, help="NIfTI image")
    p.add_argument("--out", required=True, type=Path, help="output label map (.nii.gz)")
    p.add_argument("--method", choices=("onnx", "mri_synthseg"), default="onnx")
    p.add_argument("--model", type=Path, default=None, help="parcellation ONNX (default: shipped)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.location import parcellate
    from model.location.labels import name
    from model.location.parcellation import label_counts
    from model.volume import read_nifti, write_nifti

    volume = read_nifti(args.input)
    labels = parcellate(volume, method=args.method, model_path=args.model, device=args.device)
    write_nifti(labels, args.out)
    vox = labels.voxel_volume_mm3
    summary = {name(k): round(v * vox / 1000.0, 1) for k, v in label_counts(labels).items() if k}
    print(json.dumps({"out": str(args.out), "volume_ml": summary}, indent=1))
    return 0
