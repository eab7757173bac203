"""The filter-effect tables: counts per rule configuration and classifier threshold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model.location import LocationConfig
from model.location import rules as rule_codes
from training.parcellation.filter_effect import (
    configurations,
    operating_point,
    read_cases,
    rule_table,
    summarise,
    write_predictions,
)


def _candidate(
    center: list[float], p: float, rejected: dict[str, str | None], id_: int = 1
) -> dict[str, Any]:
    det = {"id": id_, "center_lps_mm": center, "probability": p, "diameter_mm": 3.0}
    return {"detection": det, "rejected_by": rejected}


def _cases() -> list[dict[str, Any]]:
    """Case a: one true CMB, found (kept by every configuration but "only csf"), and an
    FP outside the brain; case b: no CMB, one weak FP in CSF."""
    truth = [{"center_lps_mm": [0.0, 0.0, 0.0], "diameter_mm": 3.0, "diameter_apparent_mm": 3.0}]
    a = {
        "case_id": "a",
        "truth": truth,
        "candidates": [
            _candidate([0.5, 0.0, 0.0], 0.99, {"none": None, "all": None, "only csf": "csf"}),
            _candidate(
                [60.0, 0.0, 0.0],
                0.98,
                {"none": None, "all": "outside_brain", "only csf": None},
                id_=2,
            ),
        ],
    }
    b = {
        "case_id": "b",
        "truth": [],
        "candidates": [
            _candidate([10.0, 10.0, 10.0], 0.6, {"none": None, "all": "csf", "only csf": "csf"})
        ],
    }
    return [a, b]


def test_summarise_counts_each_configuration_at_each_threshold() -> None:
    summary = summarise(_cases(), thresholds=(0.5, 0.97))
    assert summary["match_rule"] == "center:5"  # recorded with the numbers it produced
    table = summary["by_configuration"]
    assert table["none"]["0.5"] == {
        "tp": 1,
        "fp": 2,
        "recall": 1.0,
        "recall_large": 1.0,
        "precision": 0.3333,
        "f1": 0.5,
        "fp_per_scan": 1.0,
        "scan_sensitivity": 1.0,
        "scan_specificity": 0.0,  # case b, without CMBs, has a kept candidate
    }
    assert (table["none"]["0.97"]["tp"], table["none"]["0.97"]["fp"]) == (1, 1)
    assert (table["all"]["0.5"]["tp"], table["all"]["0.5"]["fp"]) == (1, 0)
    assert table["all"]["0.5"]["scan_specificity"] == 1.0
    assert (table["only csf"]["0.5"]["tp"], table["only csf"]["0.5"]["fp"]) == (0, 1)
    assert table["only csf"]["0.5"]["recall"] == 0.0
    assert summary["unet_candidates"] is None  # records written before it was kept
    cases = _cases()
    cases[0]["unet_candidates"] = {"n": 5, "truth_found": []}
    cases[1]["unet_candidates"] = {"n": 3, "truth_found": []}
    ceiling = summarise(cases, thresholds=(0.5,))["unet_candidates"]
    assert ceiling == {
        "per_scan": 4.0,
        "tp": 0,
        "recall": 0.0,
        "recall_large": 0.0,
        "by_apparent_size": {"3-5 mm": {"n": 1, "tp": 0}},
    }


def test_rule_table_reports_removed_fps_and_lost_cmbs_against_no_rules() -> None:
    md = rule_table(summarise(_cases(), thresholds=(0.97,)), 0.97)
    lines = {line.split("|")[1].strip(): line for line in md.splitlines()[2:]}
    assert "| 1/1 (100 %) | 0/1 |" in lines["all"]
    assert "| 0/1 (0 %) | 1/1 |" in lines["only csf"]


def test_operating_point_is_the_highest_recall_within_the_fp_budget() -> None:
    def row(recall: float, fp_per_scan: float, f1: float = 0.5) -> dict[str, float]:
        return {"recall": recall, "fp_per_scan": fp_per_scan, "f1": f1}

    rows = {
        "0.8": row(0.6, 0.7, f1=0.4),
        "0.9": row(0.5, 0.4),
        "0.95": row(0.5, 0.3, f1=0.6),
        "0.97": row(0.4, 0.1),
    }
    summary = {"by_configuration": {"defaults": rows, "strict": {"0.5": row(0.9, 3.0)}}}
    assert operating_point(summary) == 0.95  # 0.9 ties on recall: the higher threshold
    assert operating_point(summary, max_fp_per_scan=1.0) == 0.8
    assert operating_point(summary, max_fp_per_scan=0.05) == 0.95  # none fits: best F1
    assert operating_point(summary, "strict") == 0.5


def test_configurations_switch_rules_as_named() -> None:
    configs = configurations()
    codes = rule_codes.REASON_CODES
    assert configs["defaults"] == LocationConfig()
    assert all(getattr(configs["all"], code) for code in codes)
    assert not any(getattr(configs["none"], code) for code in codes)
    for code in codes:
        assert [getattr(configs[f"only {code}"], c) for c in codes] == [c == code for c in codes]
        assert [getattr(configs[f"without {code}"], c) for c in codes] == [c != code for c in codes]


def test_summarise_needs_cases_and_reads_them_back(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        summarise([])
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in _cases()))
    assert read_cases(path) == _cases()
    assert read_cases(tmp_path / "missing.jsonl") == []


def test_summarise_reads_out_alone_and_a_measuring_run_needs_data(tmp_path: Path, capsys) -> None:
    from training.parcellation.filter_effect import main

    (tmp_path / "cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in _cases()))
    assert main(["--out", str(tmp_path), "--summarise", "--threshold", "0.97"]) == 0
    assert "| all | 1/1 (100 %) | 0/1 |" in capsys.readouterr().out
    for mode in ([], ["--replay", str(tmp_path)]):
        with pytest.raises(SystemExit) as exc:
            main(["--out", str(tmp_path / "o"), *mode])
        assert exc.value.code == 2
        assert "--data is needed" in capsys.readouterr().err


def test_predictions_carry_the_configurations_rejections(tmp_path: Path) -> None:
    from evaluation.io import load_predictions

    assert write_predictions(_cases(), tmp_path, "all") == 2
    preds = load_predictions(tmp_path)
    kept = {case: [d.kept for d in p.detections] for case, p in preds.items()}
    assert kept == {"a": [True, False], "b": [False]}
    a = json.loads((tmp_path / "a" / "detections.json").read_text())
    assert a["detections"][1]["reject_reason"] == "outside_brain"


def test_replay_relocates_cached_outputs_without_the_networks(
    tmp_path: Path, shared_data: Path
) -> None:
    """A --cache run's outputs replayed: located on the cached parcellation, each configuration's
    rejections recorded, the true CMB matched and the FP outside the head removed by the rules."""
    import numpy as np

    from model.types import Detection
    from model.volume import write_nifti
    from tests.model.location.conftest import brain_labels, interior_voxel, voxel_lps
    from training.parcellation.filter_effect import load_outputs, replay, save_outputs

    parc = brain_labels(shared_data)
    wm = voxel_lps(parc, interior_voxel(parc, 41, depth=2))
    outside = voxel_lps(parc, np.array([1, 1, 1]))
    detections = [
        Detection(1, wm, 3.0, 14.0, 0.99),
        Detection(2, outside, 3.0, 14.0, 0.98),
    ]
    labels = parc.with_array(np.zeros(parc.shape, np.float32))
    unet = "cmb_unet 9.9 sha256:0123"
    save_outputs(tmp_path / "cache" / "c1.pkl", detections, labels, parc, unet, 0.05)
    back, labels_back, parc_back, unet_back, threshold_back = load_outputs(
        tmp_path / "cache" / "c1.pkl"
    )
    assert (unet_back, threshold_back) == (unet, 0.05)
    assert [d.center_lps_mm for d in back] == [wm, outside]
    assert np.array_equal(parc_back.array, parc.array)
    assert np.array_equal(labels_back.affine, labels.affine)

    data = tmp_path / "data"
    data.mkdir()
    # the image is read again (tubular reads the dark structure through each candidate)
    noise = np.random.default_rng(0).normal(100.0, 3.0, parc.shape).astype(np.float32)
    k, j, i = interior_voxel(parc, 41, depth=2)
    noise[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2] -= 60.0  # the true CMB: a dark spot
    write_nifti(parc.with_array(noise), data / "c1.nii.gz")
    write_nifti(labels, data / "c1_label.nii.gz")
    truth = {"center_lps_mm": list(wm), "diameter_mm": 3.0, "diameter_apparent_mm": 3.0}
    case_files = {"image": "c1.nii.gz", "label": "c1_label.nii.gz"}
    records = [
        {"case_id": "c1", "acquisition": {"sequence": "t2star"}, "cmbs": [truth], **case_files},
        {"case_id": "c2", "acquisition": {"sequence": "swi"}, "cmbs": []},  # not cached
    ]
    (data / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = replay(data, tmp_path / "cache", tmp_path / "out")
    assert summary["n_cases"] == 1
    assert summary["unet"] == unet  # what the candidates were measured behind
    assert summary["unet_threshold"] == 0.05  # and at which U-Net probability
    # every U-Net candidate counts for the ceiling, whatever the classifier and rules did
    assert summary["unet_candidates"] == {
        "per_scan": 2.0,
        "tp": 1,
        "recall": 1.0,
        "recall_large": 1.0,
        "by_apparent_size": {"3-5 mm": {"n": 1, "tp": 1}},  # the evaluation report's bins
    }
    (case,) = read_cases(tmp_path / "out" / "cases.jsonl")
    first, second = case["candidates"]
    assert first["rejected_by"]["defaults"] is None
    assert first["region"]["label"] == 41
    assert set(first["dark_structure"]) >= {"elongation", "length_mm", "width_mm"}
    assert second["rejected_by"]["defaults"] == "outside_brain"
    assert second["rejected_by"]["none"] is None
    at = summary["by_configuration"]
    assert (at["none"]["0.97"]["tp"], at["none"]["0.97"]["fp"]) == (1, 1)
    assert (at["defaults"]["0.97"]["tp"], at["defaults"]["0.97"]["fp"]) == (1, 0)


def test_classifier_without_replay_is_refused(tmp_path: Path, capsys) -> None:
    """--classifier rescores cached candidates; without --replay it would be silently ignored."""
    from training.parcellation.filter_effect import main

    args = ["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--classifier", "c.onnx"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert "needs --replay" in capsys.readouterr().err


def test_unet_makes_candidates_so_replay_and_summarise_refuse_it(tmp_path: Path, capsys) -> None:
    from training.parcellation.filter_effect import main

    args = ["--data", str(tmp_path), "--out", str(tmp_path / "o")]
    for new in (
        ["--unet", "u.onnx"],
        ["--unet-threshold", "0.1"],
        ["--unet-spacing", "1", "1", "1"],
        ["--unet-tta"],
    ):
        for mode in (["--replay", str(tmp_path)], ["--summarise"]):
            with pytest.raises(SystemExit) as exc:
                main([*args, *new, *mode])
            assert exc.value.code == 2
            assert "make new candidates" in capsys.readouterr().err


def test_unet_tta_reaches_the_measurement_and_is_named_in_the_unet_identity(
    tmp_path: Path, monkeypatch
) -> None:
    """--unet-tta: candidates of the 8-flip mean, named so (before the grid, which stays
    readable), so that a replay or a summary never passes them off as the plain U-Net's."""
    from model.candidate_classifier import identity_grid
    from training.parcellation import filter_effect

    plain = "cmb_unet 0.12.0 sha256:ab12"
    assert filter_effect.with_tta(plain) == plain + " with 8-flip TTA"
    on_grid = plain + " on a 0.7 x 0.7 x 0.7 mm grid"
    tagged = filter_effect.with_tta(on_grid)
    assert tagged == "cmb_unet 0.12.0 sha256:ab12 with 8-flip TTA on a 0.7 x 0.7 x 0.7 mm grid"
    assert identity_grid(tagged) == (0.7, 0.7, 0.7)

    data = tmp_path / "data"
    data.mkdir()
    (data / "cases.jsonl").write_text(
        json.dumps({"case_id": "c0", "image": "c0.nii.gz", "cmbs": []}) + "\n"
    )
    seen = []

    def fake_measure(ref, *args, **kwargs) -> dict[str, Any]:
        seen.append(kwargs["unet_tta"])
        return {"case_id": ref.case_id, "truth": [], "candidates": []}

    monkeypatch.setattr(filter_effect, "measure_case", fake_measure)
    filter_effect.run(data, tmp_path / "o", unet_tta=True)
    assert seen == [True]


def test_a_summary_names_its_unet_only_when_every_case_agrees() -> None:
    from training.parcellation.filter_effect import measured_behind

    assert measured_behind([{"unet": "a"}, {"unet": "a"}]) == "a"
    assert measured_behind([{"unet": "a"}, {"unet": "b"}]) == ""
    assert measured_behind([{"unet": "a"}, {}]) == ""
    assert measured_behind([{}]) == ""


def test_a_summary_states_its_unet_threshold_only_when_every_case_agrees() -> None:
    from training.parcellation.filter_effect import unet_threshold_of

    assert unet_threshold_of([{"unet_threshold": 0.1}, {"unet_threshold": 0.1}]) == 0.1
    assert unet_threshold_of([{"unet_threshold": 0.1}, {"unet_threshold": 0.3}]) is None
    assert unet_threshold_of([{"unet_threshold": 0.1}, {}]) is None


def test_candidate_rows_say_outcome_rules_and_features(tmp_path: Path) -> None:
    """The tuning table: one row per candidate at or above the threshold, TP/FP without rules."""
    from training.parcellation.filter_effect import candidate_rows, write_csv

    cases = _cases()
    cases[0]["candidates"][0]["dark_structure"] = {"elongation": 1.4, "length_mm": 6.0}
    cases[0]["truth"][0] |= {"region": "Left-Putamen", "mars": "deep"}
    rows = candidate_rows(cases, threshold=0.9)
    assert [(r["case_id"], r["outcome"]) for r in rows] == [("a", "TP"), ("a", "FP")]  # b: 0.6
    tp, fp = rows
    assert (tp["cmb_region"], tp["cmb_mars"], tp["cmb_diameter_apparent_mm"]) == (
        "Left-Putamen",
        "deep",
        3.0,
    )
    assert tp["rejected_by only csf"] == "csf" and tp["rejected_by all"] == ""
    assert fp["rejected_by all"] == "outside_brain" and fp["cmb_region"] is None
    assert tp["dark_structure.elongation"] == 1.4 and "dark_structure.elongation" not in fp
    write_csv(rows, tmp_path / "c.csv")
    lines = (tmp_path / "c.csv").read_text().splitlines()
    assert len(lines) == 3 and "dark_structure.length_mm" in lines[0]


def test_shards_measure_disjoint_cases_that_make_up_the_set(tmp_path: Path, monkeypatch) -> None:
    """--shard K N: every N-th case from the K-th, so N processes share a set; their records,
    joined, are the whole set once."""
    from training.parcellation import filter_effect

    data = tmp_path / "data"
    data.mkdir()
    ids = [f"c{n}" for n in range(7)]
    (data / "cases.jsonl").write_text(
        "".join(json.dumps({"case_id": i, "image": f"{i}.nii.gz", "cmbs": []}) + "\n" for i in ids)
    )

    def fake_measure(ref, *args, **kwargs) -> dict[str, Any]:
        return {"case_id": ref.case_id, "truth": [], "candidates": []}

    monkeypatch.setattr(filter_effect, "measure_case", fake_measure)
    measured = []
    for k in range(3):
        out = tmp_path / f"shard_{k}"
        filter_effect.run(data, out, shard=(k, 3))
        measured.append([c["case_id"] for c in read_cases(out / "cases.jsonl")])
    assert measured == [["c0", "c3", "c6"], ["c1", "c4"], ["c2", "c5"]]
    with pytest.raises(ValueError, match="no cases to measure for shard 7 of 8"):
        filter_effect.run(data, tmp_path / "shard_7", shard=(7, 8))


def test_summarise_joins_shard_folders_into_out(tmp_path: Path, capsys) -> None:
    """--summarise --join DIR ...: the shards' records written together to --out, then the
    tables of the whole set, as if one run had measured it."""
    from training.parcellation.filter_effect import main

    first, second = _cases()
    for name, case in (("s0", second), ("s1", first)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cases.jsonl").write_text(json.dumps(case) + "\n")
    out = tmp_path / "joined"
    joined = ["--out", str(out), "--summarise", "--threshold", "0.97"]
    assert main([*joined, "--join", str(tmp_path / "s0"), str(tmp_path / "s1")]) == 0
    assert "| all | 1/1 (100 %) | 0/1 |" in capsys.readouterr().out
    assert sorted(c["case_id"] for c in read_cases(out / "cases.jsonl")) == sorted(
        c["case_id"] for c in _cases()
    )
    single = tmp_path / "single"
    single.mkdir()
    (single / "cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in _cases()))
    assert main(["--out", str(single), "--summarise"]) == 0
    whole = json.loads((single / "filter_effect.json").read_text())
    assert json.loads((out / "filter_effect.json").read_text()) == whole


def test_join_refuses_a_case_twice_no_records_and_a_folder_with_records(
    tmp_path: Path, capsys
) -> None:
    from training.parcellation.filter_effect import main

    case = _cases()[0]
    for name in ("s0", "s1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cases.jsonl").write_text(json.dumps(case) + "\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "cases.jsonl").write_text(json.dumps(case) + "\n")
    runs = (
        (["--out", str(tmp_path / "a"), "--summarise", "--join", "s0", "s1"], "another shard"),
        (["--out", str(tmp_path / "b"), "--summarise", "--join", "empty"], "hold no cases"),
        (["--out", str(tmp_path / "full"), "--summarise", "--join", "s0"], "already holds"),
        (["--out", str(tmp_path / "c"), "--join", "s0"], "add --summarise"),
    )
    for args, message in runs:
        args = [str(tmp_path / a) if a in ("s0", "s1", "empty") else a for a in args]
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    assert len(read_cases(tmp_path / "full" / "cases.jsonl")) == 1
    assert not (tmp_path / "a" / "cases.jsonl").exists()
    # a shard stopped before its first case is said and joined without
    both = ["--summarise", "--join", str(tmp_path / "s0"), str(tmp_path / "empty")]
    assert main(["--out", str(tmp_path / "d"), *both]) == 0
    assert "empty: no cases.jsonl records, joined without it" in capsys.readouterr().out
    assert len(read_cases(tmp_path / "d" / "cases.jsonl")) == 1


def test_a_record_a_stopped_run_was_writing_is_left_out_and_cut_before_resuming(
    tmp_path: Path, monkeypatch
) -> None:
    """A shard stopped at a lease's deadline may leave half a line: joining reads the whole
    records, and a resumed run measures that case again after cutting the half line."""
    from training.parcellation import filter_effect

    data = tmp_path / "data"
    data.mkdir()
    (data / "cases.jsonl").write_text(
        "".join(json.dumps({"case_id": i, "image": f"{i}.nii.gz", "cmbs": []}) + "\n" for i in "ab")
    )
    out = tmp_path / "out"
    out.mkdir()
    whole = json.dumps({"case_id": "a", "truth": [], "candidates": []}) + "\n"
    (out / "cases.jsonl").write_text(whole + '{"case_id": "b", "tru')
    assert [c["case_id"] for c in read_cases(out / "cases.jsonl")] == ["a"]

    measured = []

    def fake_measure(ref, *args, **kwargs) -> dict[str, Any]:
        measured.append(ref.case_id)
        return {"case_id": ref.case_id, "truth": [], "candidates": []}

    monkeypatch.setattr(filter_effect, "measure_case", fake_measure)
    filter_effect.run(data, out)
    assert measured == ["b"]
    assert [c["case_id"] for c in read_cases(out / "cases.jsonl")] == ["a", "b"]


def test_shard_must_name_one_of_n_and_splits_only_a_measuring_run(tmp_path: Path, capsys) -> None:
    from training.parcellation.filter_effect import main

    args = ["--data", str(tmp_path), "--out", str(tmp_path / "o")]
    for bad in (
        ["--shard", "3", "3"],
        ["--shard", "-1", "2"],
        ["--shard", "0", "2", "--summarise"],
    ):
        with pytest.raises(SystemExit) as exc:
            main([*args, *bad])
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "0 <= K < N" in err and "not with --replay or --summarise" in err


def test_score_features_read_the_scores_the_component_and_the_series_voxel_size() -> None:
    """What a stacked score could read (training.classifier.stacking): logits of both scores,
    the component's size and shape, the series' own slice and in-plane spacing."""
    import math

    import numpy as np

    from model.types import Detection, Volume
    from training.parcellation.filter_effect import score_features

    image = Volume(np.zeros((4, 4, 4), np.float32), np.diag([5.0, 0.5, 0.7, 1.0]))
    det = Detection(1, (0.0, 0.0, 0.0), 2.0, 4.2, 0.9, mean_probability=0.5, elongation=1.5)
    assert score_features(image, det) is None  # the classifier did not score it
    det.unet_probability = 0.8
    assert score_features(None, det) is None  # no image, no voxel size
    features = score_features(image, det)
    assert features == {
        "classifier_logit": round(math.log(0.9 / 0.1), 5),
        "unet_logit": round(math.log(0.8 / 0.2), 5),
        "unet_mean_logit": 0.0,
        "log_diameter_mm": round(math.log(2.0), 5),
        "elongation": 1.5,
        "slice_mm": 5.0,
        "inplane_mm": 0.6,
    }
    det.probability = 1.0  # a certain score stays finite
    certain = score_features(image, det)
    assert certain is not None
    assert certain["classifier_logit"] == round(math.log(0.9999 / 1e-4), 5)
