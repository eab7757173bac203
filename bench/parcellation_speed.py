"""Parcellation speed: whole head, this CPU, the product's code path (``parcellate_onnx``).

Run: ``nice -n 5 .venv/bin/python -m bench.parcellation_speed [--quick] [--model PATH]``

Inputs: a held-out SynthSeg label map (subject 18) rendered as a T2*-like
image on two source grids, (a) 1 mm isotropic 256^3 (the SynthSeg grid) and
(b) an axial SWI-like grid, 0.45 x 0.45 mm in-plane, 1.5 mm slices
(512 x 448 x 112).  Timed: resampling onto the 2 mm canonical grid,
normalisation, the network, the arg-max and the nearest resampling back, with
ONNX Runtime on 1 and 2 threads (interleaved, bench/common.py).  Without
model/weights/parcellation.onnx an UNTRAINED network of the same architecture
is exported (valid for time only).  Target: <= 15 s per whole head.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench.common import Recorder, interleaved, stats
from model.location.grid import canonical_grid
from model.location.parcellation import labels_onto, parcellate_onnx, read_label_nifti
from model.onnx_model import OnnxModel
from model.paths import WEIGHTS_DIR, shared_data_dir
from model.types import Volume

T2STAR_LIKE = {2: 0.45, 41: 0.45, 3: 0.6, 42: 0.6, 4: 0.9, 43: 0.9, 24: 0.9, 13: 0.3, 52: 0.3}


def _image_from_labels(labels: Volume, seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    ids = np.rint(labels.array).astype(np.int64)
    lut = rng.uniform(0.05, 0.7, int(ids.max()) + 1).astype(np.float32)
    for lab, val in T2STAR_LIKE.items():
        lut[lab] = val
    lut[0] = 0.02
    image = lut[ids] + rng.normal(0, 0.02, ids.shape).astype(np.float32)
    return labels.with_array(image.astype(np.float32))


def _swi_grid() -> Volume:
    affine = np.zeros((4, 4))
    affine[2, 0], affine[1, 1], affine[0, 2] = 1.5, 0.45, 0.45  # k: S, j: P, i: L
    affine[:3, 3] = (-100.0, -110.0, -70.0)
    affine[3, 3] = 1.0
    return Volume(array=np.zeros((112, 448, 512), np.float32), affine=affine)


def _untrained(path: Path) -> Path:
    import torch

    from training.parcellation.export import export_parcellation, parcellation_metadata
    from training.parcellation.network import build_parcellation_network

    torch.manual_seed(0)
    md = parcellation_metadata(version="0.0.0-UNTRAINED-timing-only")
    return export_parcellation(build_parcellation_network().eval(), md, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", type=Path, default=None)
    a = p.parse_args(argv)
    rec = Recorder("parcellation_speed", a.quick)
    seg = shared_data_dir() / "synthseg/data/training_label_maps/training_seg_18.nii.gz"
    labels_1mm = read_label_nifti(seg)
    head_1mm = _image_from_labels(labels_1mm)
    swi = _image_from_labels(labels_onto(labels_1mm, _swi_grid()))
    with tempfile.TemporaryDirectory() as tmp:
        path = a.model or WEIGHTS_DIR / "parcellation.onnx"
        if not path.is_file():
            path = _untrained(Path(tmp) / "untrained.onnx")
            rec.notes.append("UNTRAINED network of the shipped architecture: time only")
        models = {t: OnnxModel.load(path, device="cpu", threads=t) for t in (1, 2)}
        rec.params = {"model": str(path), "inputs": {"1mm_256": head_1mm.shape, "swi": swi.shape}}
        for name, vol in (("1mm_256", head_1mm), ("swi_0.45x0.45x1.5", swi)):
            _, shape = canonical_grid(vol, 2.0, divisor=16)
            variants = {
                f"threads={t}": (lambda m=m, v=vol: parcellate_onnx(v, m))
                for t, m in models.items()
            }
            times = interleaved(variants, 1 if a.quick else 3, warmup=0 if a.quick else 1)
            rec.results[name] = {
                "source_shape": vol.shape,
                "network_grid": shape,
                **{k: stats(v) for k, v in times.items()},
            }
            print(name, shape, {k: round(min(v), 2) for k, v in times.items()}, flush=True)
    print(rec.write())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
