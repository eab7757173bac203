"""Smoke test of the benchmarks: every ``bench/*.py`` with a ``--quick`` runs and writes its JSON.

The benchmarks themselves are measurements, not tests (docs/benchmarks.md);
this only guards that each one still runs end to end at its smoke size and
records the command, the machine and the load with its results.  Together
they take minutes on the shared 2-core machine, hence ``slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"


def quick_scripts() -> list[str]:
    """Modules under bench/ that offer ``--quick`` (helpers such as common/probe do not)."""
    return sorted(
        p.stem
        for p in BENCH.glob("*.py")
        if not p.name.startswith("_") and '"--quick"' in p.read_text(encoding="utf-8")
    )


def test_every_benchmark_is_covered() -> None:
    names = quick_scripts()
    for expected in ("inference_speed", "pipeline_stages", "ingest", "memory", "scaling"):
        assert expected in names


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", quick_scripts())
def test_quick_run_writes_json(name: str, tmp_path: Path) -> None:
    source = (BENCH / f"{name}.py").read_text(encoding="utf-8")
    if name in ("ingest", "end_to_end") and shutil.which("storescu") is None:
        pytest.skip("dcmtk not installed")
    if name == "ingest" and shutil.which("Orthanc") is None:
        pytest.skip("orthanc not installed")
    cmd = [sys.executable, "-m", f"bench.{name}", "--quick"]
    out = tmp_path / f"{name}.json"
    if '"--out"' in source:
        cmd += ["--out", str(out)]
    else:  # writes bench/results/<name>.quick.json
        out = BENCH / "results" / f"{name}.quick.json"
        out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=880, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    payload = json.loads(out.read_text())
    assert payload["quick"] is True
    assert f"bench.{name}" in payload["command"]
    assert "load average" in payload["load_before"]
    assert payload["machine"]["logical_cpus"] >= 1
    assert payload["results"], "no results recorded"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_cascade_benchmark_times_another_pair(tmp_path: Path) -> None:
    """``bench.unet_grid --pair``: the shipped files given as the other pair give the same
    candidates (the variants differ only by the files they load)."""
    weights = REPO / "model" / "weights"
    out = tmp_path / "pair.json"
    pair = [str(weights / "cmb_unet.onnx"), str(weights / "cmb_classifier.onnx")]
    cmd = [sys.executable, "-m", "bench.unet_grid", "--quick", "--pair", *pair, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=880, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    payload = json.loads(out.read_text())
    assert payload["params"]["pair"] == pair
    (case,) = (v for k, v in payload["results"].items() if isinstance(v, dict))
    shipped, other = case["variants"]["shipped"], case["variants"]["pair"]
    assert shipped["candidates"] == other["candidates"] and shipped["kept"] == other["kept"]
    assert case["wall_ratio"]["of_medians"] > 0
