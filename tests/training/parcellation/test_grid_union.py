"""training.parcellation.grid_union: two grids' kept candidates joined, on hand-made records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.parcellation.grid_union import best, join, main, paired_cases, score, sweep

CMB_A = [10.0, 0.0, 0.0]
CMB_B = [-30.0, 20.0, 5.0]


def candidate(center: list[float], p: float, rejected: str | None = None) -> dict[str, Any]:
    return {
        "detection": {"center_lps_mm": center, "diameter_mm": 3.0, "probability": p},
        "rejected_by": {"defaults": rejected, "none": None},
    }


def record(case_id: str, candidates: list[dict[str, Any]]) -> dict[str, Any]:
    truth = [
        {"center_lps_mm": CMB_A, "diameter_apparent_mm": 4.0},
        {"center_lps_mm": CMB_B, "diameter_apparent_mm": 1.5},
    ]
    return {"case_id": case_id, "truth": truth, "candidates": candidates}


def two_grids() -> tuple[dict[str, Any], dict[str, Any]]:
    """The first grid finds the large CMB A only; the second finds A again (a copy 1 mm off),
    the small B, a false positive at 0.5 and one the location rules reject."""
    first = record("c", [candidate(CMB_A, 0.9)])
    second = record(
        "c",
        [
            candidate([11.0, 0.0, 0.0], 0.95),
            candidate(CMB_B, 0.8),
            candidate([50.0, 50.0, 50.0], 0.5),
            candidate([-50.0, 50.0, 50.0], 0.99, rejected="tubular"),
        ],
    )
    return first, second


def test_a_copy_of_a_joined_candidate_is_one_object_and_rejected_ones_stay_out() -> None:
    first, second = two_grids()
    pairs = [(first, second)]
    both = score(pairs, 0.68, 0.7)
    assert (both.tp, both.fp, both.tp_large) == (2, 0, 1)  # A once, B from the second grid
    assert both.recall == 1.0 and both.recall_large == 1.0
    assert (score(pairs, 0.68, 0.4).tp, score(pairs, 0.68, 0.4).fp) == (2, 1)
    alone = score(pairs, 0.68, None)
    assert (alone.tp, alone.fp, alone.recall_large) == (1, 0, 1.0)
    # without the first grid the second's copy of A counts: A and B, no duplicate
    assert (score(pairs, None, 0.7).tp, score(pairs, None, 0.7).fp) == (2, 0)
    joined = join([first["candidates"][0]["detection"]], [], 0.95, 0.5)
    assert joined == []  # the first grid under its threshold gives nothing


def test_sweep_and_the_export_rule_on_pairs() -> None:
    first, second = two_grids()
    scores = sweep([(first, second)], firsts=(None, 0.68), seconds=(None, 0.4, 0.7))
    assert len(scores) == 5  # (None, None) is not scored
    chosen = best(scores, max_fp_per_scan=0.5)
    # the second grid alone finds as many for as few: one U-Net pass rather than two
    assert (chosen.first, chosen.second, chosen.tp, chosen.fp) == (None, 0.7, 2, 0)
    chosen = best([s for s in scores if s.first is not None], max_fp_per_scan=0.5)
    assert (chosen.first, chosen.second, chosen.tp, chosen.fp) == (0.68, 0.7, 2, 0)
    with pytest.raises(ValueError, match="no threshold pair"):
        best([score([(first, second)], None, 0.4)], max_fp_per_scan=0.5)


def test_the_runs_must_hold_the_same_cases(tmp_path: Path, capsys: Any) -> None:
    first, second = two_grids()
    with pytest.raises(ValueError, match="different cases"):
        paired_cases([first], [record("other", [])])
    for name, rec in (("a", first), ("b", second)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cases.jsonl").write_text(json.dumps(rec) + "\n")
    assert main(["--first", str(tmp_path / "a"), "--second", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "| 0.68 | 0.8 | 2, 0 | 1.000 (1.000) | 0.00 |" in out
    assert "chosen" in out
    assert (
        main(
            ["--first", str(tmp_path / "a"), "--second", str(tmp_path / "b"), "--at", "off", "0.4"]
        )
        == 0
    )
    assert "| off | 0.4 | 2, 1 | 1.000 (1.000) | 1.00 |" in capsys.readouterr().out
