"""What one data-loader worker delivers: training patches/s with and without augmentation.

Run: ``nice -n 5 .venv/bin/python -m bench.patch_loading [--quick]``

Why: on the GPU lease of 2026-11-27 the U-Net (batch 2, 48^3) trained at
14-21 steps/s with nine loader workers while the GPU stayed 0-20 % busy, so
the loaders, not the GPU, set the pace.  This measures one worker's share,
as ``training.data.PatchDataset.__getitem__`` does it (crop around a sampled
centre, then ``training.augment.build_augmentation``), one torch thread as in
a ``DataLoader`` worker, on a prepared case of the size of a 1 mm head
(random intensities: no transform's cost depends on the content).

Variants, interleaved: ``crop`` (augmentation off: the floor), ``augment``
(the training defaults, ``AugmentConfig()``), ``all_p0`` (the same pipeline
with every probability 0: its fixed cost), and each transform alone at
probability 1 (``only_<p_name>``), which says where the time goes: the
default's expected cost is about all_p0 + the sum of p x (only_x - all_p0).
``augment_ungated_elastic`` and ``all_p0_ungated_elastic`` are the first two
as they ran before the elastic transform was gated (``training.augment``):
the baseline of that change, measured in the same invocation.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from bench.common import Recorder, interleaved, ratio, stats

SHAPE = (176, 208, 176)  # a head on the 1 mm model grid, as the preprocessed cases are


def make_dataset(augment: Any, length: int, seed: int = 0) -> Any:
    import numpy as np

    from training.augment import build_augmentation
    from training.data import PatchDataset, PreparedCase

    rng = np.random.default_rng(seed)
    image = rng.standard_normal(SHAPE, dtype=np.float32)
    target = np.zeros(SHAPE, dtype=np.uint8)
    centers = rng.uniform(30, np.array(SHAPE) - 30, size=(10, 3))
    for c in centers.astype(int):
        target[c[0] - 1 : c[0] + 2, c[1] - 1 : c[1] + 2, c[2] - 1 : c[2] + 2] = 1
    bbox = ((10, SHAPE[0] - 10), (10, SHAPE[1] - 10), (10, SHAPE[2] - 10))
    case = PreparedCase("bench", image, target, centers, bbox)
    return PatchDataset(
        [case], (48, 48, 48), length, fg_fraction=0.6, seed=seed,
        transform=build_augmentation(augment),
    )  # fmt: skip


def ungated(dataset: Any) -> Any:
    """The dataset with the elastic transform's probability left to MONAI (as before the
    ``training.augment._WhenDrawn`` gate): it then resamples through an identity grid
    whenever its draw fails."""
    from training.augment import _WhenDrawn

    steps = dataset.transform.transforms
    for n, step in enumerate(steps):
        if isinstance(step, _WhenDrawn):
            step.transform.prob = step.p  # type: ignore[attr-defined]
            steps = (*steps[:n], step.transform, *steps[n + 1 :])
    dataset.transform.transforms = steps
    return dataset


def variants(items: int) -> dict[str, Any]:
    from training.augment import AugmentConfig

    defaults = AugmentConfig()
    p_names = [f.name for f in dataclasses.fields(defaults) if f.name.startswith("p_")]
    configs: dict[str, Any] = {
        "crop": AugmentConfig(enabled=False),
        "augment": defaults,
    }
    none: dict[str, Any] = {name: 0.0 for name in p_names}
    configs["all_p0"] = AugmentConfig(**none)  # the pipeline with every draw failing
    for name in p_names:
        configs[f"only_{name}"] = AugmentConfig(**{**none, name: 1.0})
    out = {}
    datasets = {label: make_dataset(cfg, items) for label, cfg in configs.items()}
    for label in ("augment", "all_p0"):  # the same pipelines as before the elastic gate
        datasets[f"{label}_ungated_elastic"] = ungated(make_dataset(configs[label], items))
    for label, dataset in datasets.items():

        def run(ds: Any = dataset) -> None:
            ds.set_epoch(ds.epoch + 1)  # new patches and draws each repeat
            for i in range(len(ds)):
                ds[i]

        out[label] = run
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # a DataLoader worker's setting
    items = 4 if args.quick else 40
    repeats = 1 if args.quick else 3
    rec = Recorder("patch_loading", args.quick)
    rec.params = {"shape": SHAPE, "patch": 48, "items_per_run": items, "repeats": repeats}
    times = interleaved(variants(items), repeats, warmup=1)
    per_patch = {k: [t / items for t in v] for k, v in times.items()}
    rec.results["per_patch_runs_s"] = per_patch
    rec.results["per_patch_s"] = {k: stats(v) for k, v in per_patch.items()}
    rec.results["elastic_gate_speedup"] = {  # before the gate / after, paired by round
        k: ratio(per_patch[f"{k}_ungated_elastic"], per_patch[k]) for k in ("augment", "all_p0")
    }
    rec.results["patches_per_s"] = {k: 1.0 / stats(v)["median"] for k, v in per_patch.items()}
    rec.results["ratio_to_crop"] = {
        k: ratio(v, per_patch["crop"]) for k, v in per_patch.items() if k != "crop"
    }
    for k, v in rec.results["per_patch_s"].items():
        print(f"{k:>22}: {1000 * v['median']:8.1f} ms/patch")
    print(f"wrote {rec.write(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
