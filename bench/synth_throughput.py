"""Synthetic data: seconds per generated case and training samples/s on this machine.

Run: ``nice -n 5 .venv/bin/python -m bench.synth_throughput [--quick]``

* ``generate_case`` per sequence (SWI 3D, T2* 2D), after a warm-up call that
  loads the label map (loading is measured separately: once per subject and
  process).
* Streaming: samples/s of ``training.synth.stream.iter_samples`` with a numpy
  transform that cuts random 64^3 patches, for ``reuse`` = 1 and 8 patches per
  generated case (one process; a DataLoader with W workers multiplies it by up
  to W on W free cores).
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np

from bench.common import Recorder, stats
from training.synth.engine import SynthCase


def _patch(case: SynthCase, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    a = case.image.array
    lo = [int(rng.integers(0, max(1, n - size + 1))) for n in a.shape]
    return a[lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size]


def main(argv: list[str] | None = None) -> int:
    from training.synth import generate_case
    from training.synth.anatomy import load_subject
    from training.synth.stream import iter_samples

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="2 cases per sequence instead of 6")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    n = 2 if args.quick else 6
    rec = Recorder("synth_throughput", args.quick)
    rec.params = {"cases_per_sequence": n, "subjects": [1, 2, 3], "patch": 64}
    t0 = time.perf_counter()
    load_subject.cache_clear()
    load_subject(1)
    rec.results["load_subject_s"] = round(time.perf_counter() - t0, 3)
    load_subject(2)
    load_subject(3)
    per_seq: dict[str, list[float]] = {"swi": [], "t2star": []}
    cpu_seq: dict[str, list[float]] = {"swi": [], "t2star": []}
    shapes: dict[str, list[list[int]]] = {"swi": [], "t2star": []}
    for i in range(n):
        for seq in ("swi", "t2star"):
            t, c = time.perf_counter(), time.process_time()
            case = generate_case(1000 + i, subject=1 + i % 3, sequence=seq)
            per_seq[seq].append(time.perf_counter() - t)
            cpu_seq[seq].append(time.process_time() - c)
            shapes[seq].append(list(case.image.shape))
    rec.results["generate_case_s"] = {k: stats(v) for k, v in per_seq.items()}
    rec.results["generate_case_cpu_s"] = {k: stats(v) for k, v in cpu_seq.items()}
    rec.results["shapes"] = shapes
    stream: dict[str, float] = {}
    for reuse in (1, 8):
        rng = np.random.default_rng(0)
        cases = max(1, n // 2)
        t = time.perf_counter()
        count = 0
        for _ in iter_samples(
            2000, functools.partial(_patch, rng=rng), reuse=reuse, limit=cases, sequence="mixed"
        ):
            count += 1
        stream[f"reuse_{reuse}_samples_per_s"] = round(count / (time.perf_counter() - t), 3)
    rec.results["stream_one_process"] = stream
    path = rec.write(args.out)
    g = rec.results["generate_case_s"]
    print(
        f"generate_case median: swi {g['swi']['median']:.1f} s, "
        f"t2star {g['t2star']['median']:.1f} s; "
        f"stream {stream}; wrote {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
