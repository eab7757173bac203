"""Why candidates miss true CMBs: peaks, components, and the dark-blob second source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model.types import Detection, Volume
from training.candidate_misses import (
    BLOB_THRESHOLDS,
    blob_record,
    component_near,
    dark_blobs,
    main,
    miss_records,
    peak_near,
    summarise,
)

# 2 mm slices, 1 mm in-plane, shifted origin: the helpers must work in millimetres
AFFINE = np.array([[2.0, 0, 0, -10.0], [0, 1.0, 0, 5.0], [0, 0, 1.0, 0.0], [0, 0, 0, 1.0]])


def _lps(volume: Volume, index: tuple[int, int, int]) -> tuple[float, float, float]:
    p = volume.index_to_lps(np.asarray(index, dtype=np.float64))
    return (float(p[0]), float(p[1]), float(p[2]))


def test_peak_and_component_near_look_within_the_radius_in_millimetres() -> None:
    prob = Volume(np.zeros((10, 20, 20), np.float32), AFFINE)
    prob.array[5, 10, 10] = 0.8
    labels = prob.with_array(np.zeros((10, 20, 20), np.float32))
    labels.array[5, 10, 10] = 3
    near = _lps(prob, (6, 10, 10))  # one slice away: 2 mm
    assert peak_near(prob, near, 2.5) == np.float32(0.8)
    assert component_near(labels, near, 2.5) == 3
    assert peak_near(prob, near, 1.5) == 0.0  # 2 mm is outside a 1.5 mm ball
    assert component_near(labels, near, 1.5) == 0
    assert peak_near(prob, (500.0, 0.0, 0.0), 3.0) == 0.0  # outside the volume


def test_miss_records_tell_matched_merged_and_unseen_cmbs() -> None:
    shape = (20, 40, 40)
    prob = Volume(np.full(shape, 0.01, np.float32), np.eye(4))
    labels = prob.with_array(np.zeros(shape, np.float32))
    labels.array[10, 5, 5] = 1  # a candidate on CMB a
    labels.array[10, 20, 20:30] = 2  # a long component through CMB b, centred 8 mm from it
    prob.array[10, 20, 20:30] = 0.9
    a, b, c = (10.0, 5.0, 5.0), (10.0, 20.0, 21.0), (10.0, 35.0, 35.0)
    detections = [Detection(1, a, 2.0, 4.0, 0.95), Detection(2, (10.0, 20.0, 29.0), 2.0, 4.0, 0.9)]
    truth = [
        {"center_lps_mm": list(p), "diameter_mm": 2.0, "diameter_apparent_mm": 2.0}
        for p in (a, b, c)
    ]
    records = miss_records("case", truth, detections, labels, prob)
    assert [r["matched"] for r in records] == [True, False, False]
    assert records[1]["component"] == 2  # b is merged into a component centred too far
    assert records[1]["component_distance_mm"] == 8.0
    assert records[1]["peak"] == 0.9
    assert records[2]["component"] == 0 and records[2]["peak"] == 0.01  # c: nothing seen


def test_dark_blobs_find_a_dark_sphere_inside_the_mask_only() -> None:
    grid = np.indices((40, 40, 48)).transpose(1, 2, 3, 0)
    image = np.ones((40, 40, 48), np.float32)
    for sphere in ((20, 20, 14), (20, 20, 36)):
        image[np.linalg.norm(grid - np.asarray(sphere), axis=-1) <= 2.0] = -2.0
    volume = Volume(image, np.eye(4))
    mask = np.zeros(image.shape, bool)
    mask[:, :, :26] = True  # the second sphere is outside the brain
    blobs = dark_blobs(volume, mask, threshold=0.5)
    assert len(blobs) == 1
    centre, sigma, response = blobs[0]
    assert np.allclose(centre, (20.0, 20.0, 14.0))
    assert sigma in (1.2, 1.8)  # a radius-2 sphere answers at about r / sqrt(3)
    assert response > 0.5
    assert dark_blobs(volume, mask, threshold=response + 1.0) == []


def test_blob_record_and_summary_count_added_cmbs_against_new_false_candidates() -> None:
    truth = [{"center_lps_mm": [0.0, 0.0, 0.0]}, {"center_lps_mm": [50.0, 0.0, 0.0]}]
    blobs = [
        Detection(1, (1.0, 0.0, 0.0), 2.0, 4.0, 0.97),  # on the first CMB
        Detection(2, (30.0, 0.0, 0.0), 2.0, 4.0, 0.91),  # a false candidate
        Detection(3, (-30.0, 0.0, 0.0), 2.0, 4.0, 0.1),  # below every threshold: not kept
    ]
    record = blob_record(truth, blobs, 5.0)
    assert record == {"n": 3, "truth_best": [0.97, None], "negative_scores": [0.91]}
    cmbs = [
        {"diameter_apparent_mm": 1.5, "matched": False, "peak": 0.001, "component": 0},
        {"diameter_apparent_mm": 4.0, "matched": True, "peak": 0.99, "component": 1},
    ]
    summary = summarise([{"cmbs": cmbs, "blobs": record}])
    assert summary["by_size"][0] == {
        "size_mm": "0-2",
        "n": 1,
        "matched": 0,
        "missed_peak_below_0.05": 1,
        "missed_peak_0.05_to_threshold": 0,
        "missed_in_a_component": 0,
    }
    assert summary["by_size"][2]["matched"] == 1
    rows = {r["threshold"]: r for r in summary["blobs"]["by_threshold"]}
    assert set(rows) == set(BLOB_THRESHOLDS)
    assert rows[0.9] == {"threshold": 0.9, "cmbs_added": 1, "false_candidates": 1}
    assert rows[0.95] == {"threshold": 0.95, "cmbs_added": 1, "false_candidates": 0}
    assert rows[0.98] == {"threshold": 0.98, "cmbs_added": 0, "false_candidates": 0}
    assert summary["blobs"]["missed_cmbs_with_a_blob"] == 1


def test_main_measures_a_cached_case_with_the_shipped_networks(tmp_path: Path) -> None:
    """End to end on a small case: the U-Net map computed again, the cache's (empty) candidates
    read, the dark spot found as a blob and scored by the shipped classifier."""
    from model.volume import write_nifti
    from training.parcellation.filter_effect import save_outputs

    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 2.0, (40, 48, 48)).astype(np.float32)
    grid = np.indices(image.shape).transpose(1, 2, 3, 0)
    image[np.linalg.norm(grid - np.array([20, 24, 24]), axis=-1) <= 2.0] = 20.0
    volume = Volume(image, np.eye(4))
    data = tmp_path / "data"
    data.mkdir()
    write_nifti(volume, data / "c1.nii.gz")
    write_nifti(volume.with_array(np.zeros(image.shape, np.float32)), data / "c1_label.nii.gz")
    truth = {"center_lps_mm": [20.0, 24.0, 24.0], "diameter_mm": 4.0, "diameter_apparent_mm": 4.0}
    record = {"case_id": "c1", "image": "c1.nii.gz", "label": "c1_label.nii.gz", "cmbs": [truth]}
    (data / "cases.jsonl").write_text(json.dumps(record) + "\n")
    parc = volume.with_array(np.full(image.shape, 2, np.float32))  # all white matter
    parc.array[:, :, :4] = 0
    empty = volume.with_array(np.zeros(image.shape, np.float32))
    save_outputs(tmp_path / "cache" / "c1.pkl", [], empty, parc, "", 0.3)

    out = tmp_path / "misses.jsonl"
    args = ["--data", str(data), "--cache", str(tmp_path / "cache"), "--out", str(out)]
    assert main([*args, "--blob-threshold", "0.5"]) == 0
    (case,) = [json.loads(line) for line in out.read_text().splitlines()]
    (cmb,) = case["cmbs"]
    assert cmb["matched"] is False and cmb["component"] == 0
    assert 0.0 <= cmb["peak"] <= 1.0
    assert case["blobs"]["n"] >= 1
    assert case["blobs"]["truth_best"][0] is not None  # the dark spot is a scored blob
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["n_cmbs"] == 1 and summary["blobs"]["missed_cmbs_with_a_blob"] == 1

    assert main(args) == 0  # without --blob-threshold: the misses only, no classifier
    (case,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert "blobs" not in case and case["cmbs"][0]["matched"] is False
    assert "blobs" not in json.loads(out.with_suffix(".summary.json").read_text())


def _empty_case(tmp_path: Path) -> tuple[Volume, Path]:
    """A dataset folder of one blank 8^3 case without CMBs, and its volume."""
    from model.volume import write_nifti

    volume = Volume(np.zeros((8, 8, 8), np.float32), np.eye(4))
    data = tmp_path / "data"
    data.mkdir()
    write_nifti(volume, data / "c1.nii.gz")
    write_nifti(volume, data / "c1_label.nii.gz")
    record = {"case_id": "c1", "image": "c1.nii.gz", "label": "c1_label.nii.gz", "cmbs": []}
    (data / "cases.jsonl").write_text(json.dumps(record) + "\n")
    return volume, data


def test_main_refuses_a_cache_made_behind_another_unet(tmp_path: Path) -> None:
    """The peaks would come from one network and the candidates from another."""
    import pytest

    from training.parcellation.filter_effect import save_outputs

    volume, data = _empty_case(tmp_path)
    save_outputs(tmp_path / "cache" / "c1.pkl", [], volume, volume, "cmb_unet 0.0 sha256:00", 0.3)
    args = ["--data", str(data), "--cache", str(tmp_path / "cache")]
    with pytest.raises(SystemExit, match=r"holds candidates of cmb_unet 0\.0 sha256:00"):
        main([*args, "--out", str(tmp_path / "m.jsonl")])


def test_a_cache_of_another_grid_is_read_with_that_grid_only(tmp_path: Path) -> None:
    """filter_effect --unet-spacing caches name the grid; the peaks must come from it too."""
    import pytest

    from model.candidate_classifier import unet_identity
    from model.onnx_model import OnnxModel, default_model_path
    from training.parcellation.filter_effect import save_outputs

    volume, data = _empty_case(tmp_path)
    shipped = OnnxModel.load(default_model_path("cmb_segmentation"), device="cpu")
    fine = unet_identity(shipped, (0.7, 0.7, 0.7))
    save_outputs(tmp_path / "cache" / "c1.pkl", [], volume, volume, fine, 0.3)
    args = ["--data", str(data), "--cache", str(tmp_path / "cache")]
    args += ["--out", str(tmp_path / "m.jsonl")]
    with pytest.raises(SystemExit, match=r"0\.7 x 0\.7 x 0\.7 mm grid, not of"):
        main(args)
    assert main([*args, "--unet-spacing", "0.7", "0.7", "0.7"]) == 0
    (case,) = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert case["n_candidates"] == 0 and case["cmbs"] == []


def test_large_cmbs_are_broken_down_by_acquisition_and_summarise_reads_a_finished_run(
    tmp_path: Path,
) -> None:
    def cmb(size: float, matched: bool) -> dict[str, object]:
        return {"diameter_apparent_mm": size, "matched": matched, "peak": 0.0, "component": 0}

    cases = [
        {"case_id": "a", "cmbs": [cmb(4.0, True), cmb(6.0, False), cmb(1.0, False)]},
        {"case_id": "b", "cmbs": [cmb(3.0, False)]},
        {"case_id": "c", "cmbs": [cmb(5.0, True)]},  # no acquisition recorded: not counted
    ]
    acquisitions = {
        "a": {"contrast_mode": "prior", "slice_thickness_mm": 1.5, "field_strength_t": 3.0},
        "b": {"contrast_mode": "random", "slice_thickness_mm": 5.0},
    }
    table = summarise(cases, acquisitions)["large_by_acquisition"]
    # the evaluation report's scan strata and bins (evaluation.stratify.SCAN_STRATA)
    assert table["synthetic_contrast"] == {
        "prior": {"n": 2, "among_candidates": 1},  # the 1 mm CMB is not large
        "random": {"n": 1, "among_candidates": 0},
    }
    assert list(table["slice_thickness"].items()) == [
        ("1.25-2.25 mm", {"n": 2, "among_candidates": 1}),
        ("3.25-5.25 mm", {"n": 1, "among_candidates": 0}),
    ]
    assert table["field_strength"] == {"3 T": {"n": 2, "among_candidates": 1}}
    assert "sequence" not in table  # no case records it
    assert "large_by_acquisition" not in summarise(cases)
    # --summarise: a finished run's jsonl and the data folder's acquisitions, no networks.
    data = tmp_path / "data"
    data.mkdir()
    (data / "cases.jsonl").write_text(
        "".join(
            json.dumps({"case_id": k, "image": f"images/{k}.nii.gz", "acquisition": v}) + "\n"
            for k, v in acquisitions.items()
        )
    )
    out = tmp_path / "misses.jsonl"
    out.write_text("".join(json.dumps(c) + "\n" for c in cases[:2]))
    assert main(["--data", str(data), "--out", str(out), "--summarise"]) == 0
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["n_cmbs"] == 4
    assert summary["large_by_acquisition"]["synthetic_contrast"]["random"] == {
        "n": 1,
        "among_candidates": 0,
    }
