from __future__ import annotations

import re

from model.dicom_out.uids import OutputUids, derived_uid

UID_RE = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


def test_uids_are_deterministic_valid_and_distinct() -> None:
    a = OutputUids("1.2.3.4", "ab" * 32)
    b = OutputUids("1.2.3.4", "ab" * 32)
    assert a.series("seg") == b.series("seg")
    assert a.instance("sc", 2) == b.instance("sc", 2)
    uids = {a.series(k) for k in ("seg", "sr", "pdf", "sc")} | {
        a.instance("seg"),
        a.instance("sc", 1),
        a.instance("sc", 2),
        a.tracking(1),
        a.device(),
    }
    assert len(uids) == 9
    for uid in uids:
        assert UID_RE.match(uid) and len(uid) <= 64


def test_uids_change_with_series_and_model() -> None:
    base = OutputUids("1.2.3.4", "ab" * 32)
    assert OutputUids("1.2.3.5", "ab" * 32).series("seg") != base.series("seg")
    assert OutputUids("1.2.3.4", "cd" * 32).series("seg") != base.series("seg")
    # the device UID names the model, whatever the input series
    assert OutputUids("9.9", "ab" * 32).device() == base.device()


def test_derived_uid_separates_parts() -> None:
    assert derived_uid("a", "bc") != derived_uid("ab", "c")
