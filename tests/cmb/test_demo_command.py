"""`cmb demo` end to end on anatomy: shipped U-Net, classifier, parcellation and rules.

The README's first command runs this.  The case is a held-out synthetic head
(subject 17), so the location filter has a brain to work on: it must run,
locate every reported microbleed and rate the study.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom

from model.location.rating import DEFINITE_CLASSIFIER

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_whole_product_path(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "cmb.cli", "demo", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    (folder,) = (out / "results").iterdir()
    payload = json.loads((folder / "detections.json").read_text())
    assert payload["candidate_classifier"]["applied"] is True
    location = payload["location_filter"]
    assert location["method"] == "onnx" and location["reason"] == "the installed parcellation model"
    rating = location["mars_rating"]
    assert rating["definite_probability"] == DEFINITE_CLASSIFIER
    kept = [d for d in payload["detections"] if d["status"] == "kept"]
    assert kept and rating["total"] == len(kept)
    for det in kept:
        assert det["region"] and det["mars"] in ("lobar", "deep", "infratentorial")
    truth = json.loads((out / "truth.json").read_text())["cmbs"]
    assert "true CMBs found within 5 mm" in proc.stdout
    found = int(proc.stdout.split(" true CMBs found")[0].rsplit(";", 1)[1].split("/")[0])
    assert 1 <= found <= len(truth)
    assert pydicom.dcmread(folder / "seg.dcm").Modality == "SEG"
    sr = pydicom.dcmread(folder / "sr.dcm")
    assert sr.Modality == "SR"
    # the filter rated the findings: each CMB's band is in the SR (private CMB-0060)
    assert str(sr).count("Microbleed rating certainty") == len(kept)
