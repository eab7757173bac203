"""training.normalization_shift: white matter under each mask, drawn against prior contrast."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.types import Volume
from model.volume import write_nifti
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


def test_images_report_each_masks_share_and_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(1)
    array = rng.normal(5, 2, (20, 24, 24)).astype(np.float32)  # air
    array[2:18, 3:21, 3:21] = rng.normal(80, 8, (16, 18, 18))  # skull
    array[4:16, 5:19, 5:19] = rng.normal(400, 10, (12, 14, 14))  # bright tissue
    array[7:13, 9:15, 9:15] = rng.normal(200, 10, (6, 6, 6))  # white matter
    path = tmp_path / "head.nii.gz"
    write_nifti(Volume(array=array, affine=oblique_affine((1.0, 1.0, 1.0))), path)
    out = tmp_path / "maps.json"
    assert main(["--images", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"| {path} | otsu |" in printed and f"| {path} | head |" in printed
    maps = json.loads(out.read_text())[str(path)]
    assert maps["head"]["mask_share"] > maps["otsu"]["mask_share"]
    assert maps["head"]["lower"] < 200.0 < maps["otsu"]["lower"]  # white matter above its clip
    with pytest.raises(SystemExit):
        main(["--images", str(path), "--seeds", "1"])
