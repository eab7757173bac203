"""training.normalization_shift: white matter under each mask, drawn against prior contrast."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.types import Volume
from tests.helpers.onnx_factory import oblique_affine
from training.normalization_shift import label_mask, main, measure, parse_seeds, table
from training.synth.contrast import TISSUE_LABELS


def test_parse_seeds_reads_single_seeds_and_ranges() -> None:
    assert parse_seeds("5") == [5]
    assert parse_seeds("5-7,10") == [5, 6, 7, 10]


def test_label_mask_takes_every_label_of_the_tissues() -> None:
    labels = np.array([0, 2, 41, 3, 4, 16], dtype=np.float32).reshape(1, 1, 6)
    volume = Volume(array=labels, affine=oblique_affine((1.0, 1.0, 1.0)))
    assert label_mask(volume, ["white_matter"]).ravel().tolist() == [0, 1, 1, 0, 0, 0]
    both = label_mask(volume, ["white_matter", "brainstem"]).ravel().tolist()
    assert both == [0, 1, 1, 0, 0, 1]
    assert 16 in TISSUE_LABELS["brainstem"]


@pytest.mark.slow
def test_measure_compares_masks_on_the_same_head_at_drawn_and_prior_contrast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = {"pixel_spacing_mm": (1.0, 1.0), "n_medullary_veins": 20, "n_cortical_veins": 5}
    result = measure([7], "train", ["otsu", "head"], override=small)
    (case,) = result["cases"]
    assert case["case_id"] == "synth-train-00000007"
    assert list(case["masks"]) == ["otsu", "head", "true_brain"]
    for row in case["masks"].values():
        assert 0.0 <= row["wm_clipped_drawn"] <= 1.0 and 0.0 <= row["wm_clipped_prior"] <= 1.0
        assert row["depth_ratio"] > 0.0
    # the head mask reaches below white matter: never more of it at the clip than otsu's
    assert case["masks"]["head"]["wm_clipped_drawn"] <= case["masks"]["otsu"]["wm_clipped_drawn"]
    assert set(result["summary"]) == {"otsu", "head", "true_brain"}
    assert result["summary"]["otsu"]["mean_abs_wm_shift"] == pytest.approx(
        abs(case["masks"]["otsu"]["wm_shift"]), abs=1e-4
    )
    assert table(result).count("\n| ") == 4  # header and three masks

    out = tmp_path / "shift.json"
    assert main(["--seeds", "7", "--split", "train", "--masks", "otsu", "--out", str(out)]) == 0
    assert "| otsu |" in capsys.readouterr().out
    assert list(json.loads(out.read_text())["summary"]) == ["otsu", "true_brain"]
