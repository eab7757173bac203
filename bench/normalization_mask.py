"""Cost of the ``head`` normalization mask against ``otsu``, in proportion to a U-Net pass.

Run: ``nice -n 5 .venv/bin/python -m bench.normalization_mask [--quick] [--cases N] [--out FILE]``

The ``head`` mask (``model.preprocess.foreground_mask``) thresholds at the
lowest of three Otsu thresholds where ``otsu`` takes one, so it searches a
256-bin histogram for three thresholds at once.  Inputs: held-out synthetic
heads made in-process by the synthetic engine (``generate_case(300100 + n,
split="val")``, subjects 17-20; needs the ``training`` extra and
../shared/data), on the shipped U-Net's 1 mm grid.  Timed, interleaved
(bench/common.py): the mask alone on the resampled array under each kind,
``prepare`` (resample + normalize: what the network sees) under each kind,
and the shipped U-Net's whole probability pass (``predict_probability``,
overlap 0) to put the difference in proportion; wall and process CPU seconds
(the CPU time is less inflated on a shared machine).  The numbers to read are
``head / otsu`` and ``(head - otsu) / unet_pass``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
from collections.abc import Callable
from pathlib import Path

from bench.common import Recorder, interleaved, ratio, stats
from model.infer import predict_probability
from model.onnx_model import ModelMetadata, OnnxModel, default_model_path
from model.preprocess import foreground_mask, on_model_grid, prepare
from model.types import Volume

#: The two masks compared (of ``model.preprocess.MASKS``).
COMPARED_MASKS = ("otsu", "head")


def with_mask(metadata: ModelMetadata, mask: str) -> ModelMetadata:
    """The model's plan with another normalization mask."""
    return dataclasses.replace(metadata, normalization={**metadata.normalization, "mask": mask})


def variants(image: Volume, unet: OnnxModel) -> dict[str, Callable[[], object]]:
    """What is timed on one case (see the module docstring)."""
    resampled = on_model_grid(image, unet.metadata).array
    timed: dict[str, Callable[[], object]] = {}
    for kind in COMPARED_MASKS:
        plan = with_mask(unet.metadata, kind)
        timed[f"mask_{kind}"] = functools.partial(foreground_mask, resampled, kind)
        timed[f"prepare_{kind}"] = functools.partial(prepare, image, plan)
    timed["unet_pass"] = lambda: predict_probability(image, unet, overlap=0.0)
    return timed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cases", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    from training.synth.engine import generate_case

    rec = Recorder("normalization_mask", a.quick)
    unet = OnnxModel.load(default_model_path("cmb_segmentation"), device="cpu")
    rec.params = {
        "unet": unet.info.to_json(),
        "shipped_mask": unet.metadata.normalization.get("mask", "all"),
        "cases": 1 if a.quick else a.cases,
    }
    repeats = 1 if a.quick else 5
    extra_share: list[float] = []
    extra_cpu_share: list[float] = []
    for n in range(rec.params["cases"]):
        case = generate_case(300100 + n, split="val")
        cpu: dict[str, list[float]] = {}
        times = interleaved(
            variants(case.image, unet), repeats, warmup=0 if a.quick else 1, cpu=cpu
        )
        medians = {k: statistics.median(v) for k, v in times.items()}
        cpu_medians = {k: statistics.median(v) for k, v in cpu.items()}
        share = (medians["prepare_head"] - medians["prepare_otsu"]) / medians["unet_pass"]
        cpu_share = (cpu_medians["prepare_head"] - cpu_medians["prepare_otsu"]) / cpu_medians[
            "unet_pass"
        ]
        extra_share.append(share)
        extra_cpu_share.append(cpu_share)
        rec.results[case.case_id] = {
            "shape": list(case.image.array.shape),
            "spacing_mm": [round(float(s), 3) for s in case.image.spacing],
            "wall_s": {k: stats(v) for k, v in times.items()},
            "cpu_s": {k: stats(v) for k, v in cpu.items()},
            "mask_head_over_otsu": ratio(times["mask_head"], times["mask_otsu"]),
            "prepare_head_over_otsu": ratio(times["prepare_head"], times["prepare_otsu"]),
            "head_extra_share_of_unet_pass": round(share, 4),
            "head_extra_cpu_share_of_unet_pass": round(cpu_share, 4),
        }
        print(case.case_id, {k: round(v, 3) for k, v in medians.items()}, flush=True)
    rec.results["summary"] = {
        "head_extra_share_of_unet_pass_median": round(statistics.median(extra_share), 4),
        "head_extra_cpu_share_of_unet_pass_median": round(statistics.median(extra_cpu_share), 4),
    }
    print(rec.write(a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
