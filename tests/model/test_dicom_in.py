"""model.dicom_in: files, folders, zips and NIfTI into studies of stacks; clear errors."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import JPEGLSLossless, generate_uid

from model.dicom_in import load_studies
from model.errors import InputError
from model.series_writer import EnhancedStack, StudyMeta, write_enhanced, write_series
from model.types import SequenceKind
from tests.helpers.dicom_studies import make_volume


def _sr(path: Path, study_uid: str, sop_class: str = pydicom.uid.BasicTextSRStorage) -> None:
    """A minimal non-image object (Basic Text SR by default)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    if sop_class == pydicom.uid.SegmentationStorage:
        # A SEG carries pixel data; it must still not be taken for an image stack.
        ds.Modality = "SEG"
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 8, 8, 7
        ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = bytes(64)
    ds.save_as(path, enforce_file_format=True)


def test_folder_files_and_zip_give_the_same_study(tmp_path: Path) -> None:
    vol = make_volume(shape=(6, 32, 32))
    paths = write_series(vol, tmp_path / "dicom" / "nested")
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in paths:
            z.write(p, f"DICOM/{p.name}")
            z.writestr(f"__MACOSX/DICOM/._{p.name}", b"\x00\x05\x16\x07 resource fork")
    for inputs in ([tmp_path / "dicom"], paths, [archive]):
        (study,) = load_studies(inputs)
        (series,) = study.series
        loaded = series.load_volume()
        np.testing.assert_array_equal(loaded.array, vol.array)
        assert len(series.source_datasets()) == 6


def test_series_info_is_filled(tmp_path: Path) -> None:
    write_series(
        make_volume(shape=(12, 32, 32)),
        tmp_path,
        flavour="ge_swan",
        echo_time_ms=22.5,
        field_strength_t=1.5,
        series_number=4,
    )
    (study,) = load_studies([tmp_path])
    info = study.series[0].info
    assert info.sequence_kind is SequenceKind.SWI
    assert info.manufacturer == "GE MEDICAL SYSTEMS"
    assert info.field_strength_t == 1.5
    assert info.echo_time_ms == 22.5
    assert info.echo_times_ms == (22.5,)
    assert info.pixel_spacing_mm == pytest.approx((0.9, 0.8))
    assert info.slice_thickness_mm == pytest.approx(2.0)
    assert info.spacing_between_slices_mm == pytest.approx(2.0)
    assert info.acquisition_type == "3D"
    assert info.series_number == 4
    assert info.sequence_name == "swan SWAN"
    assert info.image_type == ("ORIGINAL", "PRIMARY", "OTHER")
    assert (info.n_instances, info.n_frames) == (12, 12)


def test_non_image_objects_are_skipped_with_reasons(tmp_path: Path) -> None:
    study = StudyMeta.synthetic(0)
    write_series(make_volume(shape=(4, 32, 32)), tmp_path, study=study)
    _sr(tmp_path / "report.dcm", study.study_instance_uid)
    _sr(tmp_path / "seg.dcm", study.study_instance_uid, pydicom.uid.SegmentationStorage)
    _sr(
        tmp_path / "gsps.dcm",
        study.study_instance_uid,
        pydicom.uid.GrayscaleSoftcopyPresentationStateStorage,
    )
    (tmp_path / "README.txt").write_text("not dicom")
    (studied,) = load_studies([tmp_path])
    reasons = dict(studied.skipped)
    assert "Basic Text SR" in reasons[str(tmp_path / "report.dcm")]
    assert "Segmentation Storage" in reasons[str(tmp_path / "seg.dcm")]
    assert "Presentation State" in reasons[str(tmp_path / "gsps.dcm")]
    assert reasons[str(tmp_path / "README.txt")] == "not a DICOM file"
    assert len(studied.series) == 1


def test_nothing_readable_is_an_input_error(tmp_path: Path) -> None:
    _sr(tmp_path / "report.dcm", generate_uid())
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=r"no DICOM or NIfTI image.*Basic Text SR"):
        load_studies([tmp_path])
    with pytest.raises(InputError, match="no such file"):
        load_studies([tmp_path / "absent"])
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InputError, match=r"bad\.zip"):
        load_studies([tmp_path / "bad.zip"])


@pytest.mark.parametrize(
    ("transfer_syntax", "keep"), [(None, 0.6), (None, 0.05), (JPEGLSLossless, 0.7)]
)
def test_truncated_file_is_an_input_error_naming_it(
    tmp_path: Path, transfer_syntax: str | None, keep: float
) -> None:
    kwargs = {"transfer_syntax": transfer_syntax} if transfer_syntax else {}
    paths = write_series(make_volume(shape=(4, 32, 32)), tmp_path, **kwargs)  # type: ignore[arg-type]
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match=re.escape(paths[2].name)):
        load_studies([tmp_path])


def test_multi_echo_series_is_split_per_echo(tmp_path: Path) -> None:
    study = StudyMeta.synthetic(0)
    uid = "1.2.826.0.1.3680043.8.498.1"
    for echo, te in ((1, 7.5), (2, 17.5), (3, 27.5)):
        write_series(
            make_volume(shape=(8, 32, 32), seed=echo),
            tmp_path,
            study=study,
            flavour="siemens_t2star",
            series_instance_uid=uid,
            echo_number=echo,
            echo_time_ms=te,
            seed=echo,
        )
    (loaded,) = load_studies([tmp_path])
    assert [s.stack_id for s in loaded.series] == [f"{uid}#echo{n}" for n in (1, 2, 3)]
    assert [s.info.echo_time_ms for s in loaded.series] == [7.5, 17.5, 27.5]
    assert all(s.info.echo_times_ms == (7.5, 17.5, 27.5) for s in loaded.series)
    vol2 = loaded.series[1].load_volume()
    np.testing.assert_array_equal(vol2.array, make_volume(shape=(8, 32, 32), seed=2).array)


def test_enhanced_magnitude_and_phase_frames_become_two_stacks(tmp_path: Path) -> None:
    mag, pha = make_volume("oblique", seed=1), make_volume("oblique", seed=2)
    write_enhanced(
        [EnhancedStack(mag, "magnitude", 18.0), EnhancedStack(pha, "phase", 18.0)],
        tmp_path,
        flavour="philips_swip",
    )
    (study,) = load_studies([tmp_path])
    by_id = {s.stack_id.split("#")[1]: s for s in study.series}
    assert set(by_id) == {"magnitude", "phase"}
    assert by_id["magnitude"].info.sequence_kind is SequenceKind.SWI
    assert by_id["phase"].info.sequence_kind is SequenceKind.PHASE
    slope = float(
        by_id["phase"]
        .source_datasets()[0]
        .SharedFunctionalGroupsSequence[0]
        .PixelValueTransformationSequence[0]
        .RescaleSlope
    )
    np.testing.assert_allclose(by_id["phase"].load_volume().array, pha.array, atol=slope)


def test_ge_magnitude_and_phase_in_one_series_are_split(tmp_path: Path) -> None:
    study = StudyMeta.synthetic(3)
    uid = "1.2.826.0.1.3680043.8.498.2"
    for kind, seed in (("magnitude", 1), ("phase", 2)):
        write_series(
            make_volume(seed=seed),
            tmp_path,
            flavour="ge_swan",
            kind=kind,
            study=study,
            series_instance_uid=uid,
            seed=seed,
        )
    (loaded,) = load_studies([tmp_path])
    assert [s.stack_id for s in loaded.series] == [f"{uid}#magnitude", f"{uid}#phase"]
    assert [s.info.sequence_kind for s in loaded.series] == [SequenceKind.SWI, SequenceKind.PHASE]


def test_nifti_input_is_one_stack_in_lps(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)  # (i, j, k) in NIfTI
    ras = np.diag([-0.9, -0.8, 2.0, 1.0])
    ras[:3, 3] = [10.0, 20.0, -30.0]
    nib.save(nib.Nifti1Image(data, ras), tmp_path / "t2star.nii.gz")
    (study,) = load_studies([tmp_path / "t2star.nii.gz"])
    (series,) = study.series
    vol = series.load_volume()
    assert vol.shape == (6, 5, 4)
    assert vol.array[5, 4, 3] == data[3, 4, 5]
    lps = vol.index_to_lps([5, 4, 3])
    expected_ras = ras @ [3, 4, 5, 1]
    np.testing.assert_allclose(lps, [-expected_ras[0], -expected_ras[1], expected_ras[2]])
    assert series.source_datasets() == []


def test_echoes_with_the_same_echo_number_are_split_by_echo_time(tmp_path: Path) -> None:
    study = StudyMeta.synthetic(4)
    uid = "1.2.826.0.1.3680043.8.498.3"
    for te, seed in ((30.0, 1), (12.0, 2)):
        write_series(
            make_volume(seed=seed),
            tmp_path,
            flavour="generic_t2star_2d",
            study=study,
            series_instance_uid=uid,
            echo_time_ms=te,
            seed=seed,
        )
    (loaded,) = load_studies([tmp_path])
    assert [(s.stack_id, s.info.echo_time_ms) for s in loaded.series] == [
        (f"{uid}#echo1", 12.0),
        (f"{uid}#echo2", 30.0),
    ]


def test_skipped_objects_stay_with_their_study(tmp_path: Path) -> None:
    first, second = StudyMeta.synthetic(5), StudyMeta.synthetic(6)
    write_series(make_volume(seed=1), tmp_path / "a", study=first, seed=1)
    write_series(make_volume(seed=2), tmp_path / "b", study=second, seed=2)
    _sr(tmp_path / "a" / "sr.dcm", first.study_instance_uid)
    studies = {s.study_instance_uid: s for s in load_studies([tmp_path])}
    skipped = [p for p, _ in studies[first.study_instance_uid].skipped]
    assert skipped == [str(tmp_path / "a" / "sr.dcm")]
    assert studies[second.study_instance_uid].skipped == []


def test_enhanced_multi_echo_is_split_per_echo(tmp_path: Path) -> None:
    echoes = [make_volume(seed=s) for s in (1, 2)]
    write_enhanced(
        [
            EnhancedStack(echoes[1], "magnitude", 24.0, echo_number=2),
            EnhancedStack(echoes[0], "magnitude", 8.0, echo_number=1),
        ],
        tmp_path,
        flavour="philips_swip",
    )
    (study,) = load_studies([tmp_path])
    assert [s.stack_id.split("#")[1] for s in study.series] == ["echo1", "echo2"]
    assert [s.info.echo_time_ms for s in study.series] == [8.0, 24.0]
    np.testing.assert_array_equal(study.series[0].load_volume().array, echoes[0].array)


def test_files_without_preamble_and_meta_header_are_read(tmp_path: Path) -> None:
    """Old exports: a bare implicit-VR dataset, no 128-byte preamble, no group 0002."""
    vol = make_volume(shape=(4, 32, 32))
    for path in write_series(vol, tmp_path):
        ds = pydicom.dcmread(path)
        ds.preamble = None
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
        assert path.read_bytes()[:2] == b"\x08\x00"
    (study,) = load_studies([tmp_path])
    np.testing.assert_array_equal(study.series[0].load_volume().array, vol.array)


def test_the_same_instance_given_twice_is_read_once(tmp_path: Path) -> None:
    paths = write_series(make_volume(shape=(4, 32, 32)), tmp_path / "a")
    copy = tmp_path / "copy.dcm"
    copy.write_bytes(paths[1].read_bytes())
    (study,) = load_studies([tmp_path / "a", paths[0], copy])
    assert study.series[0].load_volume().shape == (4, 32, 32)
    reasons = dict(study.skipped)
    assert reasons[str(paths[0])].startswith("duplicate of")
    assert reasons[str(copy)] == f"duplicate of {paths[1]}"
