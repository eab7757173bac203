"""Each true CMB's visibility on the acquired image, and recall tabulated by it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.lesion_phantom import lesion_phantom
from training.conspicuity import main, outcomes, tabulate


def _candidate(center: list[float], probability: float, rejected: str | None) -> dict:
    return {
        "detection": {"id": 0, "center_lps_mm": center, "probability": probability},
        "rejected_by": {"defaults": rejected, "none": None},
    }


def _record(case_id: str = "c1") -> dict:
    """Truth 0 kept at 0.9, truth 1 a candidate the rules reject, truth 2 not a candidate."""
    truth = [
        {"center_lps_mm": [5.0, 10.0, 10.0], "diameter_apparent_mm": 4.0, "label": 1},
        {"center_lps_mm": [5.0, 28.0, 28.0], "diameter_apparent_mm": 2.5, "label": 2},
        {"center_lps_mm": [2.0, 30.0, 5.0], "diameter_apparent_mm": 1.0, "label": 4},
    ]
    return {
        "case_id": case_id,
        "truth": truth,
        "unet_candidates": {"n": 3, "truth_found": [0, 1]},
        "candidates": [
            _candidate([5.0, 10.0, 10.0], 0.9, None),
            _candidate([5.0, 28.0, 28.0], 0.95, "vessel"),
            _candidate([9.0, 35.0, 35.0], 0.99, None),  # a false positive
        ],
    }


def test_outcomes_tell_kept_lost_candidates_and_misses() -> None:
    record = _record()
    assert outcomes(record, "defaults", 0.68) == {0: "kept", 1: "candidate", 2: "missed"}
    assert outcomes(record, "defaults", 0.92) == {0: "candidate", 1: "candidate", 2: "missed"}
    assert outcomes(record, "none", 0.68) == {0: "kept", 1: "kept", 2: "missed"}
    with pytest.raises(ValueError, match="no configuration 'default'"):
        outcomes(record, "default", 0.68)  # a misspelt name would keep every candidate


def test_tabulate_counts_per_bin_and_per_size_within_a_bin() -> None:
    rows: list[dict[str, Any]] = [
        {"cnr": 0.5, "rose": 1.0, "diameter_apparent_mm": 1.0, "outcome": "missed"},
        {"cnr": 0.7, "rose": 4.0, "diameter_apparent_mm": 3.5, "outcome": "candidate"},
        {"cnr": 6.0, "rose": 30.0, "diameter_apparent_mm": 3.5, "outcome": "kept"},
        {"cnr": None, "rose": None, "diameter_apparent_mm": 2.5, "outcome": "kept"},
    ]
    table = tabulate(rows)
    assert table["total"] == {"n": 4, "candidate": 3, "kept": 2}
    assert table["by_cnr"] == {
        "<1": {"n": 2, "candidate": 1, "kept": 0},
        ">=5": {"n": 1, "candidate": 1, "kept": 1},
        "unknown": {"n": 1, "candidate": 1, "kept": 1},
    }
    assert list(table["by_rose"]) == ["<3", "3-5", ">=20", "unknown"]
    assert table["by_cnr_and_apparent_size"]["<1"] == {
        "<2 mm": {"n": 1, "candidate": 0, "kept": 0},
        "3-5 mm": {"n": 1, "candidate": 1, "kept": 0},
    }


def _folder(tmp_path: Path, record: dict) -> tuple[Path, Path]:
    from model.types import Volume
    from model.volume import write_nifti

    image, labels = lesion_phantom()
    volume = Volume(image, np.eye(4))
    data = tmp_path / "data"
    data.mkdir()
    write_nifti(volume, data / "c1.nii.gz")
    write_nifti(volume.with_array(labels.astype(np.float32)), data / "c1_label.nii.gz")
    case = {
        "case_id": "c1",
        "image": "c1.nii.gz",
        "label": "c1_label.nii.gz",
        "acquisition": {"snr": 50.0, "sequence": "swi"},
        "cmbs": record["truth"],
    }
    (data / "cases.jsonl").write_text(json.dumps(case) + "\n")
    effect = tmp_path / "effect"
    effect.mkdir()
    (effect / "cases.jsonl").write_text(json.dumps(record) + "\n")
    return data, effect


def test_main_writes_rows_tables_and_a_gallery(tmp_path: Path) -> None:
    data, effect = _folder(tmp_path, _record())
    out, png = tmp_path / "out", tmp_path / "gallery.png"
    args = ["--data", str(data), "--effect", str(effect), "--threshold", "0.68"]
    assert main([*args, "--out", str(out), "--gallery", str(png)]) == 0
    rows = [json.loads(line) for line in (out / "cmbs.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in rows] == ["kept", "candidate", "missed"]
    assert rows[0]["cnr"] > 20 and rows[1]["cnr"] < 3 and rows[2]["cnr"] is None
    assert rows[0]["snr"] == 50.0 and rows[0]["sequence"] == "swi"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 1
    assert summary["total"] == {"n": 3, "candidate": 2, "kept": 1}
    assert "| all | 3 | 2 | 1 | 0.333 |" in (out / "summary.md").read_text()
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_main_refuses_records_of_other_cases(tmp_path: Path) -> None:
    record = _record()
    data, effect = _folder(tmp_path, record)
    record["truth"] = record["truth"][:2]
    (effect / "cases.jsonl").write_text(json.dumps(record) + "\n")
    args = ["--data", str(data), "--effect", str(effect), "--threshold", "0.68"]
    with pytest.raises(ValueError, match="not the same cases"):
        main([*args, "--out", str(tmp_path / "out")])
