"""Each importer round-trips a small fixture written in the source's real layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.types import Volume
from model.volume import write_nifti
from training.datasets.importers import import_dataset
from training.datasets.layout import load_case, read_cases

SHAPE = (12, 40, 36)


def _affine(spacing=(2.0, 0.8, 0.7)) -> np.ndarray:
    a = np.eye(4)
    a[:3, 0] = [0, 0, spacing[0]]
    a[:3, 1] = [0, spacing[1], 0]
    a[:3, 2] = [spacing[2], 0, 0]
    a[:3, 3] = [-12.0, -15.0, -10.0]
    return a


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
    """A brain-like image with two dark lesions, and their binary mask."""
    rng = np.random.default_rng(seed)
    img = (100 + rng.normal(0, 2, SHAPE)).astype(np.float32)
    mask = np.zeros(SHAPE, np.uint8)
    centres = [(4, 12, 10), (8, 28, 25)]
    g = np.indices(SHAPE).transpose(1, 2, 3, 0)
    for c in centres:
        d = np.sqrt(np.sum(((g - c) * np.array([2.0, 0.8, 0.7])) ** 2, axis=-1))
        mask |= (d <= 1.6).astype(np.uint8)
        img[d <= 1.6] = 20.0
    return img, mask, centres


def _check_round_trip(out: Path, image: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> dict:
    cases = read_cases(out)
    assert len(cases) == 1
    rec = cases[0]
    img, lab, rec2 = load_case(out, rec["case_id"])
    assert rec2 == rec
    np.testing.assert_allclose(img.array, np.nan_to_num(image), atol=1e-3)
    np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    assert set(np.unique(lab.array)) == {0, 1, 2}
    np.testing.assert_array_equal(lab.array > 0, mask > 0)
    assert {c["label"] for c in rec["cmbs"]} == {1, 2}
    for c in rec["cmbs"]:
        centre_idx = img.lps_to_index(c["center_lps_mm"])
        assert lab.array[tuple(np.rint(centre_idx).astype(int))] == c["label"]
        assert c["diameter_apparent_mm"] > 0
        assert c["contrast"] > 0.5
    return rec


def test_valdo_task2_layout(tmp_path: Path) -> None:
    img, mask, _ = _scene()
    img[0, :, :] = np.nan  # VALDO images carry NaNs outside the brain mask
    sub = tmp_path / "Task2" / "sub-205"
    write_nifti(Volume(img, _affine()), sub / "sub-205_space-T2S_desc-masked_T2S.nii.gz")
    write_nifti(Volume(img, _affine()), sub / "sub-205_space-T2S_desc-masked_T1.nii.gz")
    write_nifti(Volume(mask.astype(np.float32), _affine()), sub / "sub-205_space-T2S_CMB.nii.gz")
    n = import_dataset("valdo", tmp_path / "Task2", tmp_path / "out")
    assert n == 1
    rec = _check_round_trip(tmp_path / "out", img, mask, _affine())
    assert rec["source"] == "valdo" and rec["cohort"] == 2
    assert rec["acquisition"]["sequence"] == "t2star"


def test_dou_cuhk_layout(tmp_path: Path) -> None:
    from scipy.io import savemat

    img, mask, centres = _scene(1)
    write_nifti(Volume(img, _affine()), tmp_path / "nii" / "01.nii")
    # 'cen': MATLAB 1-based (i, j, k) indices of the NIfTI array = our (k, j, i) reversed.
    cen = np.array([[c[2] + 1, c[1] + 1, c[0] + 1] for c in centres], dtype=np.float64)
    (tmp_path / "ground_truth").mkdir()
    savemat(str(tmp_path / "ground_truth" / "01.mat"), {"cen": cen})
    assert import_dataset("dou", tmp_path, tmp_path / "out") == 1
    rec = _check_round_trip(tmp_path / "out", img, mask, _affine())
    assert rec["acquisition"]["field_strength_t"] == 3.0


@pytest.mark.parametrize("layout", ["images-labels", "nnunet", "flat"])
def test_nifti_pairs_layouts(tmp_path: Path, layout: str) -> None:
    img, mask, _ = _scene(2)
    src = tmp_path / "src"
    if layout == "images-labels":
        ip, mp = src / "images" / "case7.nii.gz", src / "labels" / "case7.nii.gz"
    elif layout == "nnunet":
        ip, mp = src / "imagesTr" / "case7_0000.nii.gz", src / "labelsTr" / "case7.nii.gz"
    else:
        ip, mp = src / "case7.nii.gz", src / "case7_mask.nii.gz"
    write_nifti(Volume(img, _affine()), ip)
    write_nifti(Volume(mask.astype(np.int16), _affine()), mp)
    assert import_dataset("nifti-pairs", src, tmp_path / "out", split="val") == 1
    rec = _check_round_trip(tmp_path / "out", img, mask, _affine())
    assert rec["split"] == "val" and rec["source_id"] == "case7"


def test_dicom_with_seg(tmp_path: Path) -> None:
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from model.series_writer import write_series

    img, mask, _ = _scene(3)
    vol = Volume(np.rint(img).astype(np.float32), _affine())
    files = write_series(
        vol,
        tmp_path / "src" / "mr",
        flavour="siemens_swi",
        echo_time_ms=20.0,
        field_strength_t=3.0,
        seed=4,
    )
    sources = [pydicom.dcmread(f) for f in files]
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="CMB",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask.astype(bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=generate_uid(),
        series_number=99,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(tmp_path / "src" / "seg.dcm")
    assert import_dataset("dicom-seg", tmp_path / "src", tmp_path / "out") == 1
    rec = _check_round_trip(tmp_path / "out", vol.array, mask, _affine())
    assert rec["acquisition"]["echo_time_ms"] == pytest.approx(20.0)
    assert rec["acquisition"]["manufacturer"]


def test_missing_source_is_an_input_error(tmp_path: Path) -> None:
    from model.errors import InputError

    with pytest.raises(InputError):
        import_dataset("valdo", tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        import_dataset("nifti-pairs", tmp_path / "empty", tmp_path / "out")
