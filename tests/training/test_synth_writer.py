"""`cmb synth`: standardized layout, DICOM flavour, validation-subject guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.datasets.layout import load_case, read_cases
from training.synth.writer import synthesize

pytestmark = pytest.mark.slow

SMALL = {"pixel_spacing_mm": (1.0, 1.0), "n_medullary_veins": 20, "n_cortical_veins": 5}


def test_synthesize_writes_layout_and_dicom(tmp_path: Path) -> None:
    from model.dicom_in import load_studies

    n = synthesize(
        tmp_path,
        cases=1,
        seed=3,
        subjects=[6],
        sequence="t2star",
        n_cmbs=3,
        dicom_flavours={"swi": "siemens_swi", "t2star": "siemens_t2star"},
        progress=False,
        params_override=SMALL,
    )
    assert n == 1
    (rec,) = read_cases(tmp_path)
    assert rec["subject"] == 6 and rec["source"] == "synthetic" and rec["split"] == "train"
    image, labels, _ = load_case(tmp_path, rec["case_id"])
    assert image.shape == labels.shape
    assert set(np.unique(labels.array).tolist()) - {0} == {c["label"] for c in rec["cmbs"]}
    (study,) = load_studies([tmp_path / rec["dicom"]])
    assert study.study_instance_uid == rec["study_instance_uid"]  # cmb evaluate pairs by it
    (series,) = study.series
    assert series.info.echo_time_ms == pytest.approx(rec["acquisition"]["echo_time_ms"], abs=0.01)
    vol = series.load_volume()
    assert vol.shape == image.shape
    # DICOM stores integers: same image within the quantisation step.
    scale = float(np.ptp(image.array)) / 4000
    np.testing.assert_allclose(vol.array, image.array, atol=scale + 1e-3)
    np.testing.assert_allclose(vol.affine, image.affine, atol=1e-3)


def test_cli_refuses_validation_subjects_for_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cmb.cli import main

    assert main(["synth", str(tmp_path), "--cases", "1", "--subjects", "17-18"]) == 1
    assert "validation" in capsys.readouterr().err
    with pytest.raises(ValueError, match="validation"):
        synthesize(tmp_path, cases=1, subjects=[19], progress=False)


def test_same_seed_same_files_bit_for_bit_any_worker_count(tmp_path: Path) -> None:
    import hashlib

    def digest(folder: Path) -> dict[str, str]:
        return {
            p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    small = {**SMALL, "slice_thickness_mm": 4.0}
    for name, workers in (("a", 1), ("b", 2)):
        synthesize(
            tmp_path / name,
            cases=2,
            seed=40,
            subjects=[7, 8],
            sequence="t2star",
            progress=False,
            params_override=small,
            workers=workers,
        )
    a, b = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert len(a) == 5 and a == b


def test_negative_every_and_drawn_subjects_reproduce_the_validation_recipe(
    tmp_path: Path,
) -> None:
    # the recipe of the held-out set (docs/model-card.md): seeds divisible by 3 have no CMB,
    # each case's subject drawn from its own seed among the validation subjects
    from training.synth.engine import drawn_subject

    n = synthesize(
        tmp_path,
        cases=2,
        seed=299,  # 300 is divisible by 3
        split="val",
        negative_every=3,
        draw_subject=True,
        n_cmbs=2,
        progress=False,
        params_override=SMALL,
    )
    assert n == 2
    recs = {r["acquisition"]["seed"]: r for r in read_cases(tmp_path)}
    assert recs[299]["acquisition"]["n_cmbs"] == 2 and recs[300]["acquisition"]["n_cmbs"] == 0
    assert recs[300]["cmbs"] == []
    for seed, rec in recs.items():
        assert rec["subject"] == drawn_subject(seed, "val")
    assert {drawn_subject(s, "val") for s in range(100000, 100060)} == {17, 18, 19, 20}


def test_random_contrast_share_changes_only_the_contrast_mode() -> None:
    from dataclasses import asdict

    from training.synth.params import RANDOM_CONTRAST_SHARE, sample_params

    def draw(seed: int, share: float) -> dict[str, object]:
        params = sample_params(
            np.random.default_rng(seed),
            seed=seed,
            subject=1,
            split="train",
            sequence="mixed",
            random_contrast=share,
        )
        return asdict(params)

    seeds = range(200)
    default = [draw(s, RANDOM_CONTRAST_SHARE) for s in seeds]
    assert default == [
        asdict(
            sample_params(
                np.random.default_rng(s), seed=s, subject=1, split="train", sequence="mixed"
            )
        )
        for s in seeds
    ]
    half = [draw(s, 0.5) for s in seeds]
    for a, b in zip(default, half, strict=True):
        assert {k for k in a if a[k] != b[k]} <= {"contrast_mode"}
        if a["contrast_mode"] == "random":  # random at 0.2 stays random at 0.5
            assert b["contrast_mode"] == "random"
    share = {
        p: sum(d["contrast_mode"] == "random" for d in ds) / 200
        for p, ds in ((0.2, default), (0.5, half))
    }
    assert 0.1 < share[0.2] < 0.3 and 0.4 < share[0.5] < 0.6  # 200 draws: ~3 sd
    assert {draw(s, 0.0)["contrast_mode"] for s in seeds} == {"prior"}
    assert {draw(s, 1.0)["contrast_mode"] for s in seeds} == {"random"}
    with pytest.raises(ValueError, match="random_contrast"):
        draw(1, 1.5)


def test_cli_refuses_a_share_outside_zero_to_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cmb.cli import main

    assert main(["synth", str(tmp_path), "--cases", "1", "--random-contrast", "1.5"]) == 1
    assert "--random-contrast" in capsys.readouterr().err
    assert not (tmp_path / "cases.jsonl").exists()
