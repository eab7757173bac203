"""model.selection: the right series of each vendor's study, with the reason."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pydicom
import pytest

from model.dicom_in import load_studies
from model.errors import GeometryError, NoUsableSeriesError
from model.selection import select_series, target_echo_time_ms
from model.series_classify import load_rules
from model.series_writer import StudyMeta, write_series
from model.types import SequenceKind
from tests.helpers.dicom_studies import make_volume, write_vendor_study

# flavour -> (expected kind, the rule that must have recognised it)
VENDORS = {
    "siemens_swi": (SequenceKind.SWI, "siemens-swi"),
    "ge_swan": (SequenceKind.SWI, "ge-swan"),
    "philips_swip": (SequenceKind.SWI, "philips-swip"),
    "siemens_t2star": (SequenceKind.T2STAR, "t2star-gre"),
    "generic_t2star_2d": (SequenceKind.T2STAR, "t2star-gre"),
}

EXPECTED_REJECTION = {
    "phase": "phase:",
    "minip": "minip:",
    "mip": "minip:",
    "t1": "inversion recovery",
    "flair": "inversion recovery",
    "localizer": "localizer",
}


@pytest.mark.parametrize("flavour", sorted(VENDORS))
def test_vendor_study_picks_the_magnitude_series(tmp_path: Path, flavour: str) -> None:
    written = write_vendor_study(tmp_path, flavour)
    (study,) = load_studies([tmp_path])
    chosen, selection = select_series(study)
    kind, rule = VENDORS[flavour]
    assert chosen.series_instance_uid == written.series_uids["target"]
    assert chosen.info.sequence_kind is kind
    assert selection.chosen == chosen.stack_id
    assert f"[rule {rule}]" in selection.reason
    rejected = {r.series_instance_uid: r.reason for r in selection.rejected}
    assert len(rejected) == len(written.series_uids) - 1
    for role, fragment in EXPECTED_REJECTION.items():
        assert fragment in rejected[written.series_uids[role]], (role, rejected)


_PATHS: dict[tuple[Path, int], list[Path]] = {}


def _write(root: Path, flavour: str, number: int, study: StudyMeta, **kw: Any) -> str:
    """Write series ``number``; return its SeriesInstanceUID (paths kept in `_PATHS`)."""
    shape = kw.pop("shape", (10, 32, 32))
    volume = make_volume(shape=shape, seed=number)
    paths = write_series(
        volume,
        root / str(number),
        flavour=flavour,
        study=study,
        series_number=number,
        seed=number,
        **kw,
    )
    _PATHS[(root, number)] = paths
    return str(pydicom.dcmread(paths[0]).SeriesInstanceUID)


def test_swi_is_preferred_over_t2star_then_thinner_slices(tmp_path: Path) -> None:
    study = StudyMeta.synthetic(1)
    t2star = _write(tmp_path, "siemens_t2star", 1, study)
    swi_thick = _write(tmp_path, "siemens_swi", 2, study, slice_thickness_mm=3.0)
    swi_thin = _write(tmp_path, "siemens_swi", 3, study, slice_thickness_mm=1.5)
    (loaded,) = load_studies([tmp_path])
    chosen, selection = select_series(loaded)
    assert chosen.series_instance_uid == swi_thin
    reasons = {r.series_instance_uid: r.reason for r in selection.rejected}
    assert "SWI is preferred over T2*-GRE" in reasons[t2star]
    assert "thinner slices" in reasons[swi_thick]
    assert "preferred over 2 other qualifying" in selection.reason


def test_multi_echo_takes_the_echo_closest_to_the_target(tmp_path: Path) -> None:
    study = StudyMeta.synthetic(2)
    uid = "1.2.826.0.1.3680043.8.498.77"
    for echo, te in enumerate((5.0, 15.0, 25.0, 35.0), start=1):
        write_series(
            make_volume(seed=echo),
            tmp_path,
            flavour="siemens_t2star",
            study=study,
            series_instance_uid=uid,
            echo_number=echo,
            echo_time_ms=te,
            field_strength_t=3.0,
            seed=echo,
        )
    (loaded,) = load_studies([tmp_path])
    assert target_echo_time_ms(3.0) == 20.0
    chosen, selection = select_series(loaded)
    # 15 and 25 ms are equally far from 20 ms: the longer echo wins (more T2* weighting).
    assert chosen.stack_id == f"{uid}#echo3"
    assert "echo 25 ms of [5, 15, 25, 35] ms" in selection.reason
    reasons = {r.series_instance_uid: r.reason for r in selection.rejected}
    assert "TE below 10 ms" in reasons[f"{uid}#echo1"]
    assert "closer to the 20 ms target" in reasons[f"{uid}#echo4"]


def test_target_echo_time_depends_on_field() -> None:
    assert target_echo_time_ms(1.5) == 25.0
    assert target_echo_time_ms(7.0) == 15.0
    assert target_echo_time_ms(None) == 20.0


def test_no_usable_series_lists_every_series(tmp_path: Path) -> None:
    study = StudyMeta.synthetic(3)
    _write(tmp_path, "siemens_t1", 1, study)
    _write(tmp_path, "siemens_swi", 2, study, kind="phase")
    _write(tmp_path, "siemens_swi", 3, study, kind="minip")
    (loaded,) = load_studies([tmp_path])
    with pytest.raises(NoUsableSeriesError) as err:
        select_series(loaded)
    message = str(err.value)
    assert message.startswith("no usable GRE/SWI series in study")
    for fragment in ("series 1 ", "inversion recovery", "series 2 ", "phase", "series 3 ", "minip"):
        assert fragment in message


def test_broken_geometry_is_rejected_and_another_series_chosen(tmp_path: Path) -> None:
    study = StudyMeta.synthetic(4)
    good = _write(tmp_path, "siemens_t2star", 1, study)
    bad = _write(tmp_path, "siemens_swi", 2, study)
    _PATHS[(tmp_path, 2)][4].unlink()  # slice 4 of 10: a hole in the SWI stack
    (loaded,) = load_studies([tmp_path])
    chosen, selection = select_series(loaded)
    reasons = {r.series_instance_uid: r.reason for r in selection.rejected}
    assert chosen.series_instance_uid == good
    assert "inconsistent geometry" in reasons[bad]
    assert "missing slice" in reasons[bad]


def test_too_few_slices_are_rejected(tmp_path: Path) -> None:
    study = StudyMeta.synthetic(5)
    _write(tmp_path, "siemens_swi", 1, study, shape=(4, 32, 32))
    good = _write(tmp_path, "siemens_t2star", 2, study)
    (loaded,) = load_studies([tmp_path])
    chosen, selection = select_series(loaded)
    assert chosen.series_instance_uid == good
    assert any("only 4 slice(s)" in r.reason for r in selection.rejected)


def test_force_series_picks_it_and_still_checks_geometry(tmp_path: Path) -> None:
    study = StudyMeta.synthetic(6)
    _write(tmp_path, "siemens_swi", 1, study)
    phase = _write(tmp_path, "siemens_swi", 2, study, kind="phase")
    (loaded,) = load_studies([tmp_path])
    chosen, selection = select_series(loaded, force_series_uid=phase)
    assert chosen.series_instance_uid == phase
    assert selection.reason.startswith(f"forced by the user ({phase})")
    with pytest.raises(NoUsableSeriesError, match="not in study"):
        select_series(loaded, force_series_uid="1.2.3.999")
    _PATHS[(tmp_path, 2)][4].unlink()
    (reloaded,) = load_studies([tmp_path])
    with pytest.raises(GeometryError):
        select_series(reloaded, force_series_uid=phase)


def test_rules_table_is_valid_data() -> None:
    rules = load_rules()
    kinds = {rule["kind"] for rule in rules["classification"]}
    assert {"swi", "t2star", "phase", "minip", "localizer", "derived", "other"} <= kinds
    assert rules["selection"]["accept_kinds"] == ["swi", "t2star"]


def test_a_site_rules_table_changes_classification_and_preference(tmp_path: Path) -> None:
    study = StudyMeta.synthetic(7)
    swi = _write(tmp_path, "siemens_swi", 1, study)
    short_te = _write(tmp_path, "siemens_t2star", 2, study, echo_time_ms=7.0)
    (default_study,) = load_studies([tmp_path])
    assert select_series(default_study)[0].series_instance_uid == swi

    rules = copy.deepcopy(load_rules())
    rules["selection"]["kind_rank"] = {"t2star": 0, "swi": 1}
    for rule in rules["classification"]:
        if rule["name"] == "t2star-gre":
            rule["when"]["all"][1]["echo_time_ms_min"] = 5.0
    (site_study,) = load_studies([tmp_path], rules=rules)
    chosen, selection = select_series(site_study, rules=rules)
    assert chosen.series_instance_uid == short_te
    assert chosen.info.sequence_kind is SequenceKind.T2STAR
    assert "T2*-GRE is preferred over SWI" in selection.rejected[0].reason


def test_only_candidate_with_broken_geometry_is_a_geometry_error(tmp_path: Path) -> None:
    study = StudyMeta.synthetic(8)
    _write(tmp_path, "siemens_t1", 1, study)
    _write(tmp_path, "siemens_swi", 2, study)
    _PATHS[(tmp_path, 2)][5].unlink()
    (loaded,) = load_studies([tmp_path])
    with pytest.raises(GeometryError, match=r"^series 2 .*missing slice.*series 1 .*inversion"):
        select_series(loaded)


def test_siemens_swi_images_win_over_the_plain_magnitude_of_the_same_scan(tmp_path: Path) -> None:
    study = StudyMeta.synthetic(9)
    mag = _write(tmp_path, "siemens_swi_mag", 1, study)
    swi = _write(tmp_path, "siemens_swi", 2, study)
    (loaded,) = load_studies([tmp_path])
    chosen, selection = select_series(loaded)
    assert chosen.series_instance_uid == swi
    by_uid = {s.series_instance_uid: s for s in loaded.series}
    assert by_uid[mag].info.sequence_kind is SequenceKind.T2STAR
    assert "SWI is preferred over T2*-GRE" in selection.rejected[0].reason
