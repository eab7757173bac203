from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from model.location import LocationConfig
from model.types import SequenceKind, SeriesInfo, Volume
from training.parcellation.rule_effect import apply, case_candidates, markdown


def fake_case() -> SimpleNamespace:
    labels = Volume(array=np.zeros((20, 40, 40), np.float32), affine=np.diag([1.0, 1.0, 1.0, 1.0]))
    labels.array[10, 20, 20] = 1
    record = {
        "cmbs": [
            {"label": 1, "center_lps_mm": [10, 20, 20], "diameter_apparent_mm": 2.0, "n_voxels": 1}
        ],
        "mimics": [
            {"kind": "vein", "center_lps_mm": [10, 20, 30], "diameter_mm": 1.0, "length_mm": 20.0},
            {"kind": "flow_void", "center_lps_mm": [10, 5, 5], "diameter_mm": 12.0},
        ],
    }
    return SimpleNamespace(labels=labels, record=record)


def test_candidates_rules_and_table() -> None:
    case = fake_case()
    cands = case_candidates(case, np.random.default_rng(0))
    assert [k for _, k in cands] == ["cmb", "vein", "flow_void"]
    assert cands[1][0].elongation == 20.0
    parc = case.labels.with_array(np.full((20, 40, 40), 41, np.float32))  # all white matter
    info = SeriesInfo("1", "2", "MR", SequenceKind.SWI)
    every_rule = LocationConfig(too_large=True)
    counts = apply(cands, case.labels, parc, info, {"all": every_rule})["all"]
    assert counts[("cmb", "kept")] == 1
    assert counts[("vein", "tubular")] == 1
    assert counts[("flow_void", "too_large")] == 1
    table = {
        "kinds": {"cmb": 1, "vein": 1},
        "anatomy": {"all": {"cmb": {"removed": 0, "of": 1}, "vein": {"removed": 1, "of": 1}}},
    }
    md = markdown(table, "anatomy")
    assert "| all | 0/1 (0 %) | 1/1 (100 %) |" in md
