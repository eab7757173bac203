"""generate_case: determinism, truth, placement, negatives, validation-subject guard."""

from __future__ import annotations

import numpy as np
import pytest

from training.synth import generate_case
from training.synth.anatomy import PARENCHYMA, check_subject

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def case():
    return generate_case(11, subject=2, sequence="t2star", n_cmbs=6)


def test_same_seed_same_case_bit_for_bit(case) -> None:
    again = generate_case(11, subject=2, sequence="t2star", n_cmbs=6)
    assert again.image.array.tobytes() == case.image.array.tobytes()
    assert again.labels.array.tobytes() == case.labels.array.tobytes()
    assert np.array_equal(again.image.affine, case.image.affine)
    assert again.record == case.record


def test_different_seed_differs(case) -> None:
    other = generate_case(12, subject=2, sequence="t2star", n_cmbs=6)
    assert other.image.shape != case.image.shape or not np.array_equal(
        other.image.array, case.image.array
    )


def test_labels_match_records(case) -> None:
    present = set(np.unique(case.labels.array).tolist()) - {0}
    assert present == {c["label"] for c in case.record["cmbs"]}
    assert case.labels.shape == case.image.shape
    for c in case.record["cmbs"]:
        assert c["diameter_apparent_mm"] > 0
        assert c["mars"] in ("lobar", "deep", "infratentorial")
        assert 0 < c["contrast"] <= 1


def test_every_cmb_inside_brain_tissue_of_its_region(case) -> None:
    anatomy = case.anatomy
    assert anatomy is not None
    cmbs = case.record["cmbs"] + case.record["subvisible_cmbs"]
    assert len(cmbs) == 6
    for c in cmbs:
        idx = np.rint(anatomy.lps_to_index(c["center_lps_mm"])).astype(int)
        assert int(anatomy.array[tuple(idx)]) == c["region_label"]
        assert c["region_label"] in PARENCHYMA
        # The whole lesion (true radius) is parenchyma, not CSF or vessel.
        r = int(np.ceil(c["diameter_true_mm"] / 2))
        block = anatomy.array[
            idx[0] - r : idx[0] + r + 1, idx[1] - r : idx[1] + r + 1, idx[2] - r : idx[2] + r + 1
        ]
        assert np.isin(block, PARENCHYMA).mean() > 0.6


def test_record_has_every_sampled_parameter(case) -> None:
    acq = case.record["acquisition"]
    for key in (
        "sequence",
        "field_strength_t",
        "echo_time_ms",
        "slice_thickness_mm",
        "slice_gap_mm",
        "pixel_spacing_mm",
        "acquisition_type",
        "snr",
        "bias",
        "oblique_deg",
        "head_rotation_deg",
        "tissue_means",
        "kspace_fraction",
    ):
        assert key in acq
    assert acq["sequence"] == "t2star" and acq["acquisition_type"] == "2D"
    assert 3.0 <= acq["slice_thickness_mm"] <= 6.0
    kinds = {m["kind"] for m in case.record["mimics"]}
    assert "vein" in kinds


def test_negative_case_has_no_cmb_voxels() -> None:
    neg = generate_case(5, subject=4, sequence="swi", n_cmbs=0)
    assert neg.record["cmbs"] == []
    assert not neg.labels.array.any()
    assert neg.record["acquisition"]["acquisition_type"] == "3D"


def test_validation_subjects_refused_for_training() -> None:
    for s in (17, 18, 19, 20):
        with pytest.raises(ValueError, match="validation"):
            generate_case(1, subject=s, split="train")
    with pytest.raises(ValueError):
        check_subject(3, "val")


def test_unknown_override_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown"):
        generate_case(1, subject=1, params_override={"no_such_param": 1})


def test_apparent_size_grows_with_b0_te() -> None:
    base = {
        "pixel_spacing_mm": (0.8, 0.8),
        "slice_thickness_mm": 2.0,
        "mimics": (),
        "n_medullary_veins": 5,
        "n_cortical_veins": 2,
    }
    sizes = []
    for b0, te in ((1.5, 12.0), (3.0, 30.0)):
        c = generate_case(
            21,
            subject=5,
            sequence="swi",
            n_cmbs=4,
            params_override={**base, "field_strength_t": b0, "echo_time_ms": te},
        )
        sizes.append(
            {
                tuple(x["center_lps_mm"]): x["diameter_apparent_mm"]
                for x in c.record["cmbs"] + c.record["subvisible_cmbs"]
            }
        )
    assert sizes[0].keys() == sizes[1].keys()
    pairs = [(sizes[0][k], sizes[1][k]) for k in sizes[0]]
    assert all(hi >= lo for lo, hi in pairs)
    assert sum(hi for _, hi in pairs) > sum(lo for lo, _ in pairs)


def test_generator_and_importers_do_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, training.synth, training.synth.stream, training.synth.writer, "
        "training.datasets.importers, training.datasets.dicom_seg, training.datasets.dou; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
