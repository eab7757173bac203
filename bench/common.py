"""Shared helpers of the benchmarks: machine and load records, repeats, JSON results, models.

Every benchmark writes one JSON file with the exact command line, a
description of the machine, the load (``uptime``) before and after, and for
each measured variant the absolute times of every repeat with min / median /
max.  Ratios are always taken between variants measured in the same
invocation, interleaved round-robin (A B C A B C ...), so a change in the
background load of the shared machine hits every variant alike.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DOCS_DIR = REPO / "docs"

if str(REPO) not in sys.path:  # `python bench/x.py` from the repository root
    sys.path.insert(0, str(REPO))


def uptime() -> str:
    """The ``uptime`` line (load averages over 1, 5, 15 minutes)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # PackageNotFoundError and broken metadata alike: just unknown
        return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "gpu": "none lent to this task (CPU only)",
    }


def stats(values: Sequence[float]) -> dict[str, float]:
    """min / median / max (and n) of repeated measurements."""
    if not values:
        raise ValueError("no measurements")
    return {
        "n": len(values),
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def interleaved(
    variants: Mapping[str, Callable[[], Any]],
    repeats: int,
    *,
    warmup: int = 1,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Time each variant ``repeats`` times, round-robin; returns wall seconds per run.

    ``warmup`` untimed rounds come first (session start-up, caches).  When
    ``cpu`` is given it receives the process CPU seconds (all threads) of each
    run: on a machine shared with other jobs CPU time is much less inflated
    by contention than wall time.
    """
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - c0)
    return times


def ratio(slow: Sequence[float], fast: Sequence[float]) -> dict[str, float]:
    """``slow / fast`` of the medians, and of the paired repeats (min / median / max)."""
    paired = [s / f for s, f in zip(slow, fast, strict=True)]
    return {
        "of_medians": statistics.median(slow) / statistics.median(fast),
        "paired_min": min(paired),
        "paired_median": statistics.median(paired),
        "paired_max": max(paired),
    }


@dataclass
class Recorder:
    """Collects a benchmark's results and writes them as JSON."""

    name: str
    quick: bool
    params: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    load_before: str = field(default_factory=uptime)
    started: float = field(default_factory=time.time)

    def write(self, out: Path | None = None) -> Path:
        path = out or RESULTS_DIR / f"{self.name}{'.quick' if self.quick else ''}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": self.name,
            "command": _command(),
            "quick": self.quick,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "wall_s": round(time.time() - self.started, 1),
            "machine": machine(),
            "nice": os.nice(0),
            "load_before": self.load_before,
            "load_after": uptime(),
            "params": self.params,
            "results": self.results,
            "notes": self.notes,
        }
        path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
        return path


def _command() -> str:
    """The command line as typed (``python -m bench.x --quick``), interpreter path shortened."""
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    if argv and Path(argv[0]).resolve() == Path(sys.executable).resolve():
        argv[0] = ".venv/bin/python" if ".venv" in sys.executable else Path(argv[0]).name
    return " ".join(shlex.quote(a) for a in argv)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def untrained_model(
    path: Path,
    *,
    seed: int = 0,
    threshold: float = 0.5,
    features: tuple[int, ...] | None = None,
) -> Path:
    """Export an UNTRAINED network of the shipped architecture (timing only, no accuracy).

    Same ``training.network`` U-Net, same export path and metadata as the
    trained model (``TrainConfig()`` defaults: 1 mm, 48^3 patches); its name
    says ``untrained`` so no number measured with it is mistaken for accuracy.
    ``features`` replaces the channel widths (a wider network's cost).
    """
    import torch

    from training.config import TrainConfig
    from training.export import build_metadata, export_onnx
    from training.network import NetworkConfig, build_network

    torch.manual_seed(seed)
    config = TrainConfig(name="cmb_unet_UNTRAINED_timing_only")
    if features is not None:
        config = replace(config, network=NetworkConfig(features=tuple(features)))
    net = build_network(config.network).eval()
    metadata = build_metadata(config, threshold=threshold)
    return export_onnx(net, metadata, path)


def shipped_model() -> Path | None:
    """The trained model in model/weights, if it has landed."""
    from model.paths import WEIGHTS_DIR

    path = WEIGHTS_DIR / "cmb_unet.onnx"
    return path if path.is_file() else None


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux ``ru_maxrss`` is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def phantom(
    shape: tuple[int, int, int],
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
    *,
    n_spots: int = 20,
    seed: int = 0,
) -> Any:
    """A head-like test volume: bright ellipsoid, darker rim, dark spots, noise (a `Volume`).

    Content only matters for candidate counts; the network's cost depends on the shape.
    """
    import numpy as np

    from model.types import Volume

    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij", sparse=True)
    r = np.sqrt((k / 0.9) ** 2 + (j / 0.85) ** 2 + (i / 0.8) ** 2)
    image = np.where(r < 1.0, 800.0, 50.0) + np.where((r > 0.9) & (r < 1.0), -300.0, 0.0)
    image = image + rng.normal(0.0, 20.0, size=shape)
    for _ in range(n_spots):
        c = [rng.uniform(0.2 * n, 0.8 * n) for n in shape]
        rad_mm = rng.uniform(1.0, 3.0)
        d2 = sum(
            ((g - cc) * s) ** 2
            for g, cc, s in zip(
                np.ogrid[: shape[0], : shape[1], : shape[2]], c, spacing_mm, strict=True
            )
        )
        image = np.where(d2 < rad_mm**2, 150.0, image)
    # Axial slices: k steps along S (LPS z), rows along P (y), columns along L (x).
    affine = np.zeros((4, 4))
    affine[2, 0], affine[1, 1], affine[0, 2], affine[3, 3] = (*spacing_mm, 1.0)
    affine[:3, 3] = [
        -spacing_mm[2] * shape[2] / 2,
        -spacing_mm[1] * shape[1] / 2,
        -spacing_mm[0] * shape[0] / 2,
    ]
    return Volume(array=np.clip(image, 0, None).astype(np.float32), affine=affine)
