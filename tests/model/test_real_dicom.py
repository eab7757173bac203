"""Real scanner files (shared/data/real_dicom) against dcm2niix's references.

dcm2niix is the field's reference DICOM-to-NIfTI converter; its NIfTI files
(RAS affine) and JSON sidecars in ``Ref/`` are an independent oracle for our
reader: every reference voxel, mapped to LPS, must land exactly on one of our
voxels and carry the same value, and the acquisition parameters must agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from model.dicom_in import load_studies
from model.errors import NoUsableSeriesError
from model.selection import select_series
from model.series import Series, Study

# vendor folder -> {stack suffix: dcm2niix reference basename}
REFERENCES: dict[str, dict[str, str]] = {
    "Siemens/2_gre_field_magph": {
        "echo1": "Si_2_gre_field_magph_e1",
        "echo2": "Si_2_gre_field_magph_e2",
    },
    "GE/6_CV_Neuro": {
        "magnitude": "GE_6_CV_Neuro_HH_Adv",
        "fieldmap": "GE_6_CV_Neuro_HH_Adv_fieldmaphz",
    },
    "Philips/fmap": {
        "magnitude": "Ph_801_WIP_B0_NS_e1",
        "fieldmap": "Ph_801_WIP_B0_NS_e2_fieldmaphz",
    },
}
CASES = [(folder, suffix) for folder, refs in REFERENCES.items() for suffix in refs]


@pytest.fixture(scope="module")
def real_dicom(shared_data: Path) -> Path:
    path = shared_data / "real_dicom"
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


_STUDIES: dict[str, Study] = {}


def _study(real_dicom: Path, folder: str) -> Study:
    if folder not in _STUDIES:
        (study,) = load_studies([real_dicom / "In" / folder])
        _STUDIES[folder] = study
    return _STUDIES[folder]


def _stack(real_dicom: Path, folder: str, suffix: str) -> Series:
    study = _study(real_dicom, folder)
    matches = [s for s in study.series if s.stack_id.endswith("#" + suffix)]
    assert len(matches) == 1, [s.stack_id for s in study.series]
    return matches[0]


@pytest.mark.parametrize("folder", sorted(REFERENCES))
def test_series_is_split_like_dcm2niix(real_dicom: Path, folder: str) -> None:
    study = _study(real_dicom, folder)
    assert len({s.series_instance_uid for s in study.series}) == 1
    assert sorted(s.stack_id.split("#")[1] for s in study.series) == sorted(REFERENCES[folder])
    assert study.skipped == []


@pytest.mark.parametrize(("folder", "suffix"), CASES)
def test_same_grid_and_world_coordinates_as_dcm2niix(
    real_dicom: Path, folder: str, suffix: str
) -> None:
    series = _stack(real_dicom, folder, suffix)
    volume = series.load_volume()
    ref: Any = nib.load(real_dicom / "Ref" / (REFERENCES[folder][suffix] + ".nii"))
    ref_data = np.asarray(ref.get_fdata())
    assert sorted(volume.shape) == sorted(ref_data.shape)
    assert np.prod(volume.spacing) == pytest.approx(np.prod(ref.header.get_zooms()[:3]), rel=1e-6)
    # Every reference voxel centre, RAS -> LPS, must be one of our voxel centres.
    ijk = np.indices(ref_data.shape).reshape(3, -1).T
    ras = ijk @ ref.affine[:3, :3].T + ref.affine[:3, 3]
    lps = ras * np.array([-1.0, -1.0, 1.0])
    index = volume.lps_to_index(lps)
    nearest = np.round(index)
    assert np.max(np.abs(index - nearest)) < 1e-3
    k, j, i = nearest.astype(int).T
    assert k.min() >= 0
    assert j.min() >= 0
    assert i.min() >= 0
    ours = volume.array[k, j, i].astype(np.float64)
    theirs = ref_data.reshape(-1)
    if folder.startswith("Philips") and suffix == "magnitude":
        # dcm2niix applies Philips' private "precise" scaling ((2005,100E)), we apply the
        # public RescaleSlope: same image up to one positive factor.
        factor = float(np.dot(ours, theirs) / np.dot(theirs, theirs))
        assert factor > 0
        np.testing.assert_allclose(ours, factor * theirs, rtol=1e-4, atol=1e-3 * ours.max())
    else:
        np.testing.assert_allclose(ours, theirs, atol=0.01)


@pytest.mark.parametrize(("folder", "suffix"), CASES)
def test_acquisition_parameters_match_sidecars(real_dicom: Path, folder: str, suffix: str) -> None:
    info = _stack(real_dicom, folder, suffix).info
    sidecar = json.loads((real_dicom / "Ref" / (REFERENCES[folder][suffix] + ".json")).read_text())
    assert info.field_strength_t == pytest.approx(sidecar["MagneticFieldStrength"])
    assert info.manufacturer is not None
    assert sidecar["Manufacturer"].lower() in info.manufacturer.lower()
    assert info.slice_thickness_mm == pytest.approx(sidecar["SliceThickness"])
    assert info.spacing_between_slices_mm == pytest.approx(sidecar["SpacingBetweenSlices"])
    assert info.series_number == sidecar["SeriesNumber"]
    if "EchoTime" in sidecar:
        assert info.echo_time_ms == pytest.approx(sidecar["EchoTime"] * 1000.0)


def test_siemens_echoes_are_split_with_their_echo_times(real_dicom: Path) -> None:
    folder = "Siemens/2_gre_field_magph"
    e1, e2 = (_stack(real_dicom, folder, s) for s in ("echo1", "echo2"))
    assert (e1.info.echo_time_ms, e2.info.echo_time_ms) == (5.19, 7.65)
    assert e1.info.echo_times_ms == e2.info.echo_times_ms == (5.19, 7.65)
    assert (e1.info.n_frames, e2.info.n_frames) == (36, 36)
    # Both echoes share InstanceNumbers 1..36: the split must not lose or mix images.
    v1, v2 = e1.load_volume(), e2.load_volume()
    assert {s.sop_instance_uid for s in v1.slices}.isdisjoint(s.sop_instance_uid for s in v2.slices)
    assert float(v1.array.mean()) > float(v2.array.mean())  # longer TE, more T2* decay


@pytest.mark.parametrize("folder", sorted(REFERENCES))
def test_field_map_series_are_not_chosen_for_microbleeds(real_dicom: Path, folder: str) -> None:
    """These are B0 field-map acquisitions (TE < 10 ms, phase/field map): nothing qualifies."""
    study = _study(real_dicom, folder)
    with pytest.raises(NoUsableSeriesError) as err:
        select_series(study)
    for series in study.series:
        assert series.stack_id in str(err.value)
    fieldmaps = [s for s in study.series if s.stack_id.endswith("#fieldmap")]
    for series in fieldmaps:
        assert series.info.sequence_kind.value == "phase"


def test_forcing_a_real_series_loads_it(real_dicom: Path) -> None:
    study = _study(real_dicom, "Siemens/2_gre_field_magph")
    uid = study.series[0].series_instance_uid
    chosen, selection = select_series(study, force_series_uid=uid + "#echo2")
    assert chosen.info.echo_time_ms == 7.65
    assert selection.chosen == uid + "#echo2"
    assert chosen.load_volume().shape == (36, 64, 64)
