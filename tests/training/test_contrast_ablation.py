"""Which tissue means blind the U-Net: variants, per-CMB peaks, and the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.onnx_model import OnnxModel
from tests.helpers.onnx_factory import make_test_model
from training.contrast_ablation import ablate, main, summary, table, variants
from training.synth.contrast import PRIORS

MEANS = {"white_matter": 1.0, "cortex": 1.9, "csf": 0.2, "pallidum": 1.5}


def test_variants_set_one_tissue_at_a_time_to_its_prior() -> None:
    out = variants(MEANS, "swi")
    assert list(out) == ["drawn", "cortex", "csf", "pallidum", "all_prior"]
    assert out["drawn"] == MEANS
    assert out["cortex"] == {**MEANS, "cortex": PRIORS["swi"]["cortex"][0]}
    assert out["all_prior"] == {t: PRIORS["swi"][t][0] for t in MEANS}
    assert list(variants(MEANS, "t2star", ["csf"])) == ["drawn", "csf", "all_prior"]
    assert list(variants(MEANS, "swi", [])) == ["drawn", "all_prior"]  # `--tissues` with none
    both = variants(MEANS, "swi", ["cortex", "csf"], together=True)
    assert list(both) == ["drawn", "cortex", "csf", "together", "all_prior"]
    assert both["together"] == {
        **MEANS,
        "cortex": PRIORS["swi"]["cortex"][0],
        "csf": PRIORS["swi"]["csf"][0],
    }  # the pallidum keeps its drawn mean
    with pytest.raises(ValueError, match="white_matter"):
        variants(MEANS, "swi", ["white_matter"])  # the reference, 1.0 in both modes
    with pytest.raises(ValueError, match="bogus"):
        variants(MEANS, "swi", ["bogus"])


def test_summary_counts_seen_cmbs_overall_and_large() -> None:
    cmbs = [{"diameter_apparent_mm": d} for d in (1.5, 3.0, 6.0)]
    s = summary([0.9, 0.1, 0.5], cmbs, seen_at=0.3)
    assert (s["n"], s["seen"], s["n_large"], s["seen_large"]) == (3, 2, 2, 1)
    assert s["mean_peak_large"] == pytest.approx(0.3)
    assert summary([], [])["mean_peak"] is None


@pytest.mark.slow
def test_ablation_regenerates_the_case_with_only_the_tissue_means_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unet_path = make_test_model(tmp_path / "unet.onnx", gain=20.0)
    small = {
        "pixel_spacing_mm": (1.0, 1.0),
        "n_medullary_veins": 20,
        "n_cortical_veins": 5,
        "n_cmbs": 4,
        "cmb_diameter_range_mm": (3.0, 6.0),
    }
    unet = OnnxModel.load(unet_path, device="cpu")
    result = ablate(7, "train", unet, tissues=["cortex"], prior_normalization=True, override=small)
    rows = {r["variant"]: r for r in result["variants"]}
    assert list(rows) == ["drawn", "cortex", "all_prior"]
    drawn, cortex = rows["drawn"], rows["cortex"]
    assert drawn["n"] == cortex["n"] == rows["all_prior"]["n"] > 0  # the same CMBs each time
    assert cortex["tissue_mean"] == PRIORS[result["sequence"]]["cortex"][0]
    assert cortex["drawn_mean"] == pytest.approx(result["tissue_means"]["cortex"], abs=1e-4)
    assert all(0.0 <= p <= 1.0 for r in rows.values() for p in r["peaks"])
    assert drawn["seen"] > 0  # the dark-blob test U-Net sees 3-6 mm CMBs on the drawn contrast
    # all_prior's own map is the fixed one: the same peaks both ways; every row has both
    assert rows["all_prior"]["prior_map_peaks"] == rows["all_prior"]["peaks"]
    assert all(len(r["prior_map_peaks"]) == r["n"] for r in rows.values())
    printed_rows = [line for line in table(result).splitlines() if line.startswith("| ")][1:]
    assert "with all_prior's normalization" in table(result)
    assert [line.count(" of ") for line in printed_rows] == [4] * len(rows)  # both runs, each row

    out = tmp_path / "ablation.json"
    assert (
        main(
            [
                "--seed",
                "7",
                "--split",
                "train",
                "--tissues",
                "csf",
                "cortex",
                "--together",
                "--unet",
                str(unet_path),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| drawn |" in printed and "| csf |" in printed and "| all_prior |" in printed
    assert "| together | csf, cortex -> priors |" in printed
    saved = json.loads(out.read_text())
    assert saved["case_id"] == "synth-train-00000007"
    assert [r["variant"] for r in saved["variants"]] == [
        "drawn",
        "csf",
        "cortex",
        "together",
        "all_prior",
    ]
    assert saved["together"] == ["csf", "cortex"]
    # the same CMBs in every variant, all read
    assert len({r["n"] for r in saved["variants"]}) == 1
