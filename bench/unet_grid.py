"""What a cascade variant costs in the product against the shipped pair: a 0.7 mm U-Net grid,
or another U-Net + classifier pair.

Run: ``nice -n 5 .venv/bin/python -m bench.unet_grid [--quick] [--cases N] [--repeats R]
[--spacing MM | --pair UNET CLASSIFIER] [--out FILE]``

The grid a cascade runs its U-Net on is the classifier file's setting
(``cmb.unet_spacing_mm``, docs/model-format.md), so the default two variants
are the shipped classifier as it is (the U-Net on its own 1 mm grid) and a
copy of it whose only change is ``cmb.unet_spacing_mm``.  ``--pair`` times
instead the shipped pair against another U-Net and classifier (files that
declare an input filter, ``cmb.input_filter``, say: the filter's own time
and the candidates it adds are what such a pair costs).  Inputs: held-out
synthetic heads made by the engine (seeds 300100 + n, subjects 17-20,
written as DICOM as ``cmb synth --dicom siemens`` writes them; needs the
``training`` extra and ../shared/data), each read from its series and run
through ``load_studies`` + ``process_study`` exactly as ``cmb detect`` runs
it (U-Net, classifier with its TTA, location filter, SEG + SR written).  The
variants are interleaved per case (bench/common.py); the numbers to read are
the ratios of wall and process-CPU seconds between them, and the stage times
(``Result.timings_s``) that make the difference.  ``--quick`` runs a small
phantom study instead (a smoke test of the path, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Recorder, interleaved, peak_rss_mib, ratio, stats

#: the grid measured against the U-Net's own (mm), the one docs/model-card.md measured
FINE_GRID = (0.7, 0.7, 0.7)


def regridded_classifier(shipped: Path, spacing: tuple[float, ...], out: Path) -> Path:
    """A copy of ``shipped`` whose cascade runs the U-Net on ``spacing``, nothing else changed.

    Timing only: its threshold and metrics still belong to the U-Net's own
    grid, which is why ``cmb classifier set-threshold`` (that refuses metrics
    of another grid) is not the path here.
    """
    import dataclasses

    from model.candidate_classifier import UNET_SPACING_KEY, format_unet_spacing
    from model.onnx_model import OnnxModel
    from training.export import set_metadata

    shutil.copyfile(shipped, out)
    metadata = OnnxModel.load(out, device="cpu").metadata
    extra = {**metadata.extra, UNET_SPACING_KEY: format_unet_spacing(spacing)}
    set_metadata(out, dataclasses.replace(metadata, extra=extra))
    return out


def inputs(tmp: Path, cases: int, *, quick: bool) -> list[tuple[str, Path, dict[str, Any]]]:
    """(name, DICOM series folder, what it is) of the studies to run.

    The full run uses held-out heads of the synthetic engine (a brain's extent
    sets the U-Net's window count); ``--quick`` a small phantom study, so the
    smoke test needs neither the shared data nor minutes of inference.
    """
    if quick:
        from bench.pipeline_stages import QUICK_STUDIES, write_study

        spec = QUICK_STUDIES["swi_3d"]
        folder = write_study(tmp / "in", "phantom_swi_3d", spec, seed=0)
        return [("phantom_swi_3d", folder, {"shape": spec[0], "spacing_mm": spec[1]})]
    from cmb.commands.synth import DICOM_FLAVOURS
    from training.synth.writer import synthesize

    synthesize(
        tmp / "data",
        cases=cases,
        seed=300100,
        split="val",
        draw_subject=True,
        dicom_flavours=DICOM_FLAVOURS["siemens"],
        workers=1,
        progress=False,
    )
    lines = (tmp / "data" / "cases.jsonl").read_text().splitlines()
    out = []
    for record in map(json.loads, lines):
        acq = record["acquisition"]
        info = {
            "sequence": acq["sequence"],
            "slice_thickness_mm": acq["slice_thickness_mm"],
            "field_strength_t": acq["field_strength_t"],
        }
        out.append((record["case_id"], tmp / "data" / record["dicom"], info))
    return out


def product_run(
    study_dir: Path, pair: tuple[Path, Path], out: Path, record: dict[str, Any]
) -> None:
    """``load_studies`` + ``process_study`` as ``cmb detect`` runs them with ``pair`` (U-Net,
    classifier); stages into ``record``."""
    from model.dicom_in import load_studies
    from model.onnx_model import load_cached
    from model.pipeline import PipelineOptions, process_study

    unet_path, classifier = pair
    unet = load_cached(unet_path, device="cpu")
    options = PipelineOptions(classifier="on", classifier_model_path=classifier)
    (study,) = load_studies([study_dir])
    outputs = process_study(study, out, options, unet)
    result = outputs.result
    record.setdefault("stages_s", []).append(dict(result.timings_s))
    record["candidates"] = len(result.detections)
    record["kept"] = sum(1 for d in result.detections if d.reject_reason is None)
    record["unet_spacing_mm"] = (result.classifier or {}).get("unet_spacing_mm")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cases", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--spacing", type=float, nargs=3, default=FINE_GRID, metavar="MM")
    p.add_argument(
        "--pair",
        type=Path,
        nargs=2,
        default=None,
        metavar=("UNET", "CLASSIFIER"),
        help="time this U-Net + classifier against the shipped pair (instead of --spacing)",
    )
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    from model.onnx_model import default_model_path

    rec = Recorder("unet_grid" if a.pair is None else "cascade_pair", a.quick)
    cases = 1 if a.quick else a.cases
    repeats = 1 if a.quick else a.repeats
    tmp = Path(tempfile.mkdtemp(prefix="bench_unet_grid_"))
    shipped = default_model_path("cmb_candidate_classification")
    unet = default_model_path("cmb_segmentation")
    variants: dict[str, tuple[Path, Path]] = {"shipped": (unet, shipped)}
    if a.pair is not None:
        variants["pair"] = (a.pair[0], a.pair[1])
        against: dict[str, Any] = {"pair": [str(v) for v in a.pair]}
    else:
        fine = regridded_classifier(shipped, a.spacing, tmp / "classifier_fine.onnx")
        variants[f"unet_{'x'.join(map(str, a.spacing))}mm"] = (unet, fine)
        against = {"fine_grid_mm": list(a.spacing)}
    rec.params = {
        "unet": str(unet),
        "classifier": str(shipped),
        **against,
        "cases": cases,
        "repeats": repeats,
        "warmup": "one untimed run of each variant on a small phantom study",
        "outputs": ["seg", "sr"],
        "ort_threads": "ONNX Runtime default (physical cores)",
    }
    # one untimed pass of each variant on a small phantom: sessions, imports, first writes
    warm_dir = inputs(tmp / "warm", 1, quick=True)[0][1]
    for variant, pair in variants.items():
        product_run(warm_dir, pair, tmp / "warm_out" / variant, {})
    for name, study_dir, info in inputs(tmp, cases, quick=a.quick):
        per_variant: dict[str, dict[str, Any]] = {n: {} for n in variants}

        def runner(
            variant: str,
            study_dir: Path = study_dir,
            per_variant: dict[str, dict[str, Any]] = per_variant,
        ) -> Any:
            def run() -> None:
                out = tmp / "out" / variant
                product_run(study_dir, variants[variant], out, per_variant[variant])
                shutil.rmtree(out, ignore_errors=True)

            return run

        cpu: dict[str, list[float]] = {}
        times = interleaved({n: runner(n) for n in variants}, repeats, warmup=0, cpu=cpu)
        names = list(variants)
        rec.results[name] = {
            **info,
            "variants": {
                n: {
                    "wall_s": stats(times[n]),
                    "cpu_s": stats(cpu[n]),
                    "stages_median_s": {
                        k: statistics.median(s[k] for s in per_variant[n]["stages_s"])
                        for k in per_variant[n]["stages_s"][0]
                    },
                    "candidates": per_variant[n]["candidates"],
                    "kept": per_variant[n]["kept"],
                    "unet_spacing_mm": per_variant[n]["unet_spacing_mm"],
                }
                for n in names
            },
            "wall_ratio": ratio(times[names[1]], times[names[0]]),
            "cpu_ratio": ratio(cpu[names[1]], cpu[names[0]]),
        }
        print(
            name,
            {n: round(min(times[n]), 1) for n in names},
            "ratio",
            round(rec.results[name]["wall_ratio"]["of_medians"], 2),
            flush=True,
        )
    rec.results["peak_rss_mib"] = round(peak_rss_mib(), 1)
    rec.results["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(rec.write(a.out))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
