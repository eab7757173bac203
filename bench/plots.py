"""Plots of the committed benchmark results (bench/results/*.json) as PNG in docs/.

Run: ``.venv/bin/python -m bench.plots``  (no measurement; reads the JSON files)

``docs/bench_inference.png``: ORT vs torch and overlap/TTA, median with min-max bars.
``docs/bench_ingest.png``: instances/s per receiver and sender count.
``docs/bench_pipeline.png``: stage breakdown per study (wall; CPU of the splits).
The scaling plot is drawn by ``bench.scaling`` itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.common import DOCS_DIR, RESULTS_DIR


def _bars(ax: Any, entries: dict[str, dict[str, float]], title: str, unit: str) -> None:
    names = list(entries)
    med = [entries[n]["median"] for n in names]
    lo = [entries[n]["median"] - entries[n]["min"] for n in names]
    hi = [entries[n]["max"] - entries[n]["median"] for n in names]
    ax.barh(names, med, xerr=[lo, hi], capsize=3, color="#4878a8")
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title, fontsize=10)


def inference(path: Path, out: Path) -> None:
    import matplotlib.pyplot as plt

    r = json.loads(path.read_text())["results"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    _bars(axes[0], r["backend_threads_s"], "ORT vs torch eager (same sliding window)", "seconds")
    _bars(axes[1], r["overlap_tta_s"], "ORT, 2 threads: overlap and flip TTA", "seconds")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def ingest(path: Path, out: Path) -> None:
    import matplotlib.pyplot as plt

    r = json.loads(path.read_text())["results"]
    rate = r["instances_per_s_median"]
    names = list(rate)
    fig, ax = plt.subplots(figsize=(8, 4))
    colours = ["#c44e52" if n.startswith("ours") else "#4878a8" for n in names]
    ax.barh(names, [rate[n] for n in names], color=colours)
    ax.invert_yaxis()
    ax.set_xlabel("instances / s (median of repeats)")
    ax.set_title("Ingest of one 452-instance study from storescu", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def pipeline(path: Path, out: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    r = json.loads(path.read_text())["results"]
    studies = [k for k, v in r.items() if isinstance(v, dict) and "product_stages_s" in v]
    fig, axes = plt.subplots(1, len(studies), figsize=(7 * len(studies), 5), squeeze=False)
    for ax, name in zip(axes[0], studies, strict=True):
        stages = {k: v["median"] for k, v in r[name]["product_stages_s"].items()}
        wall = {**stages, **r[name]["split_wall_s"]}
        cpu = r[name]["split_cpu_s"]
        keys = list(wall)
        y = np.arange(len(keys))
        ax.barh(y - 0.2, [wall[k] for k in keys], 0.4, label="wall")
        ax.barh(y + 0.2, [cpu.get(k, 0.0) for k in keys], 0.4, label="CPU (splits only)")
        ax.set_yticks(y, keys)
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        total = r[name]["product_total_wall_s"]["median"]
        total_cpu = r[name]["product_total_cpu_s"]["median"]
        ax.set_title(f"{name}: total {total:.0f} s wall, {total_cpu:.0f} s CPU", fontsize=10)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--docs", type=Path, default=DOCS_DIR)
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    jobs = {
        "inference_speed.json": (inference, "bench_inference.png"),
        "ingest.json": (ingest, "bench_ingest.png"),
        "pipeline_stages.json": (pipeline, "bench_pipeline.png"),
    }
    for name, (fn, png) in jobs.items():
        src = args.results / name
        if src.is_file():
            fn(src, args.docs / png)
            print(f"wrote {args.docs / png}")
        else:
            print(f"skipped {png}: no {src}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
