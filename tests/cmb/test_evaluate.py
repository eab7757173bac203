"""`cmb evaluate` end to end on a tiny folder pair."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cmb.cli import main
from tests.evaluation.conftest import affine, dataset, detection, detections_json  # noqa: F401


def test_cli_writes_every_output(
    dataset: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pred, truth = dataset
    out = tmp_path / "report"
    rc = main(
        [
            "evaluate",
            "--pred",
            str(pred),
            "--truth",
            str(truth),
            "--out",
            str(out),
            "--bootstrap",
            "100",
            "--match",
            "center:5",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Sensitivity (recall)" in printed
    assert "0.500" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["schema_version"] == "1.2"
    assert metrics["detection"]["global"]["recall"]["value"] == 0.5
    assert metrics["config"]["match"] == "center:5"
    with (out / "per_cmb.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert {r["outcome"] for r in rows} == {"TP", "FP", "FN"}
    for name in (
        "report.md",
        "report.html",
        "froc.png",
        "recall_by_size.png",
        "recall_by_slice_thickness.png",
        "recall_by_region.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "froc.png").read_bytes()[:4] == b"\x89PNG"
    assert "By CMB mars" in (out / "report.md").read_text()


def test_cli_missing_case_fails_with_ids(
    dataset: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pred, truth = dataset
    shutil.rmtree(pred / "c2")
    rc = main(
        ["evaluate", "--pred", str(pred), "--truth", str(truth), "--out", str(tmp_path / "r")]
    )
    assert rc != 0
    err = capsys.readouterr().err
    assert "c2" in err
    assert "without prediction" in err
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_cli_bad_rule_and_real_process(dataset: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    pred, truth = dataset
    rc = main(
        [
            "evaluate",
            "--pred",
            str(pred),
            "--truth",
            str(truth),
            "--out",
            str(tmp_path / "r"),
            "--match",
            "nearest",
        ]
    )
    assert rc != 0
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cmb.cli",
            "evaluate",
            "--pred",
            str(pred),
            "--truth",
            str(truth),
            "--out",
            str(tmp_path / "r2"),
            "--bootstrap",
            "0",
            "--match",
            "overlap",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r2" / "metrics.json").is_file()


def test_cli_pairs_detect_output_named_by_study_uid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cmb detect` names its folders by StudyInstanceUID; truth records carry the uid."""
    import numpy as np
    import pydicom

    from model.series_writer import write_series
    from model.types import Volume

    truth, pred = tmp_path / "truth", tmp_path / "pred"
    image = Volume(np.full((4, 16, 16), 100.0, np.float32), affine())
    files = write_series(image, truth / "dicom" / "case-001", seed=7)
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    record = {
        "case_id": "case-001",
        "dicom": "dicom/case-001",
        "study_instance_uid": uid,
        "acquisition": {"field_strength_t": 3.0},
        "cmbs": [{"center_lps_mm": [0.0, 0.0, -6.0], "diameter_mm": 3.0}],
    }
    (truth / "cases.jsonl").write_text(json.dumps(record) + "\n")
    (pred / uid).mkdir(parents=True)
    dets = detections_json([detection(1, (2, 8, 8), 0.9)])  # kji (2,8,8) -> LPS (0, 0, -6)
    (pred / uid / "detections.json").write_text(json.dumps({**dets, "study_instance_uid": uid}))
    out = tmp_path / "report"
    argv = ["evaluate", "--pred", str(pred), "--truth", str(truth), "--out", str(out)]
    assert main([*argv, "--bootstrap", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cases"] == ["case-001"]
    assert metrics["detection"]["global"]["counts"]["tp"] == 1
    # a prediction folder whose uid matches no truth record is still listed by id
    (pred / "9.9.9").mkdir()
    (pred / "9.9.9" / "detections.json").write_text(json.dumps(detections_json([])))
    capsys.readouterr()
    assert main([*argv, "--bootstrap", "0"]) != 0
    assert "9.9.9" in capsys.readouterr().err


def test_no_masks_evaluates_points_without_the_label_files(
    dataset: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """``--no-masks`` on a truth folder holding cases.jsonl but not its label maps (a pooled
    folder of several sets' records, say): the detection metrics, no Dice."""
    pred, truth = dataset
    shutil.rmtree(truth / "labels")
    for p in pred.glob("*/labels.nii.gz"):
        p.unlink()
    out = tmp_path / "report"
    args = ["evaluate", "--pred", str(pred), "--truth", str(truth), "--out", str(out)]
    rc = main([*args, "--bootstrap", "0", "--no-masks"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["detection"]["global"]["recall"]["value"] == 0.5
    assert metrics["segmentation"]["dice_per_cmb"]["mean"] is None


def test_several_truth_folders_are_pooled(
    dataset: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """``--truth A B``: the sets' cases evaluated as one (a pooled report over several
    validation sets), without building a joined folder by hand."""
    pred, truth = dataset
    extra = tmp_path / "extra_truth.json"
    extra.write_text(json.dumps({"c3": [{"center_lps_mm": [0.0, 0.0, -6.0]}]}))
    (pred / "c3").mkdir()
    dets = detections_json([detection(1, (2, 8, 8), 0.9)])  # kji (2,8,8) -> LPS (0, 0, -6)
    (pred / "c3" / "detections.json").write_text(json.dumps(dets))
    out = tmp_path / "report"
    args = ["evaluate", "--pred", str(pred), "--truth", str(truth), str(extra), "--out", str(out)]
    assert main([*args, "--bootstrap", "0", "--no-masks"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    detection_global = metrics["detection"]["global"]
    assert detection_global["recall"]["value"] == pytest.approx(2 / 3)  # c1 1 of 2, c3 1 of 1
    assert metrics["n_scans"] == 3
