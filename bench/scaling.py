"""Scaling: inference time and peak memory against voxel count (several volume sizes), plotted.

Run: ``nice -n 5 .venv/bin/python -m bench.scaling [--quick]``

Each size runs in a fresh process (``bench.probe scaling``): a phantom at the
model's 1 mm spacing (no resampling cost mixed in) through
``predict_probability`` (overlap 0.5) and ``extract_candidates``.  Sizes run
round-robin over the repeats.  A straight line is fitted to time and to peak
RSS against voxels; the plot goes to docs/bench_scaling.png.  Time is
expected to follow the number of sliding windows, which grows in steps with
the volume, i.e. linearly on average.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import DOCS_DIR, REPO, Recorder, shipped_model, stats, untrained_model

SHAPES = [(48, 96, 96), (64, 128, 128), (96, 160, 160), (128, 192, 192)]
QUICK_SHAPES = [(32, 48, 48), (48, 64, 64)]


def probe(model: Path, shape: tuple[int, int, int]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.probe", "scaling", str(model), *map(str, shape)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise RuntimeError(f"probe failed: {proc.stderr[-2000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("{")][-1]
    out: dict[str, Any] = json.loads(line)
    return out


def plot(rows: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vox = np.array([r["voxels"] for r in rows.values()]) / 1e6
    t = np.array([r["total_s"]["median"] for r in rows.values()])
    cpu = np.array([r["cpu_s"]["median"] for r in rows.values()])
    mem = np.array([r["peak_rss_mib"]["median"] for r in rows.values()])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, y, label in ((axes[0], t, "wall s"), (axes[0], cpu, "CPU s (all threads)")):
        ax.plot(vox, y, "o", label=label)
        fit = np.polyfit(vox, y, 1)
        ax.plot(vox, np.polyval(fit, vox), "--", lw=1)
    axes[0].set_xlabel("voxels (millions, 1 mm model grid)")
    axes[0].set_ylabel("seconds (median)")
    axes[0].set_title("U-Net sliding window + candidates")
    axes[0].legend()
    axes[1].plot(vox, mem, "o")
    fit = np.polyfit(vox, mem, 1)
    axes[1].plot(vox, np.polyval(fit, vox), "--", lw=1)
    axes[1].set_xlabel("voxels (millions, 1 mm model grid)")
    axes[1].set_ylabel("peak RSS MiB (median)")
    axes[1].set_title("worker peak memory")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path, help="PNG path (default docs/bench_scaling.png)")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--repeats", type=int)
    args = parser.parse_args(argv)
    quick = args.quick
    repeats = args.repeats or 1
    shapes = QUICK_SHAPES if quick else SHAPES
    tmp = Path(tempfile.mkdtemp(prefix="bench_scaling_"))
    rec = Recorder("scaling", quick)
    model = args.model or shipped_model()
    if model is None:
        model = untrained_model(tmp / "untrained.onnx")
        rec.notes.append("UNTRAINED U-Net of the shipped architecture (time and memory only)")
    from model.infer import window_starts

    rec.params = {"model": str(model), "shapes": shapes, "overlap": 0.5, "repeats": repeats}
    raw: dict[str, list[dict[str, Any]]] = {}
    for _ in range(repeats):
        for shape in shapes:
            raw.setdefault("x".join(map(str, shape)), []).append(probe(model, shape))
    rows: dict[str, Any] = {}
    for key, runs in raw.items():
        shape = tuple(runs[0]["shape"])
        n_windows = int(np.prod([len(window_starts(max(s, 48), 48, 0.5)) for s in shape]))
        rows[key] = {
            "voxels": runs[0]["voxels"],
            "windows": n_windows,
            **{k: stats([r[k] for r in runs]) for k in ("total_s", "cpu_s", "peak_rss_mib")},
        }
    rec.results["sizes"] = rows
    vox = np.array([r["voxels"] for r in rows.values()], dtype=float)
    for key in ("total_s", "cpu_s", "peak_rss_mib"):
        y = np.array([r[key]["median"] for r in rows.values()])
        slope, intercept = np.polyfit(vox, y, 1)
        r2 = 1.0 - float(np.sum((np.polyval([slope, intercept], vox) - y) ** 2)) / max(
            float(np.sum((y - y.mean()) ** 2)), 1e-12
        )
        rec.results[f"linear_fit_{key}"] = {
            "per_million_voxels": float(slope) * 1e6,
            "intercept": float(intercept),
            "r2": r2,
        }
    png = args.plot or (tmp / "scaling.png" if quick else DOCS_DIR / "bench_scaling.png")
    plot(rows, png)
    rec.results["plot"] = str(png.relative_to(REPO) if png.is_relative_to(REPO) else png)
    print({k: (v["voxels"], round(v["total_s"]["median"], 1)) for k, v in rows.items()})
    print(f"wrote {rec.write(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
