"""Hypothesis on the parsing entry points: model.dicom_in.load_studies and the service's ingest.

From a valid MR slice, hypothesis overwrites byte ranges, truncates and
stretches.  The contract: `load_studies` returns studies or raises a
model.errors.CmbError (the reason a job shows); the service's ingest
(`store.parse_part10` then `Spool.store`) stores or raises NotStorableError
(the reason an upload lists).  Derandomized: the same examples every run.
"""

from __future__ import annotations

import contextlib
import struct
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom.uid import UID

from model.dicom_in import load_studies
from model.errors import CmbError
from service.db.session import Database
from service.store import NotStorableError, Spool, parse_part10
from tests.reliability.conftest import FIGURES
from tests.reliability.fuzz import elements, encode, meta_end
from tests.service.dicom_factory import mr_dataset


def _base() -> bytes:
    ds = mr_dataset("2.25.99", "2.25.99.1", 0, size=16)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID("2.25.99.1.1")
    return encode(ds)  # fixed UIDs: the same bytes, hence the same examples, every run


BASE = _base()
START = meta_end(BASE)


def _without_rows() -> bytes:
    """BASE with (0028,0010) Rows re-tagged (0029,0010): an image without Rows."""
    raw = bytearray(BASE)
    rows = next(e for e in elements(BASE, START) if (e.group, e.elem) == (0x0028, 0x0010))
    struct.pack_into("<H", raw, rows.offset, 0x0029)
    return bytes(raw)


SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@st.composite
def broken(draw: st.DrawFn, whole_file: bool) -> bytes:
    raw = bytearray(BASE)
    lo = 0 if whole_file else START
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(lo, len(raw) - 1))
        raw[at : at + 4] = draw(st.binary(min_size=1, max_size=4))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(lo, len(raw)))]
    return bytes(raw)


COUNTS = {"load_studies": 0, "ingest": 0}


@SETTINGS
@given(raw=broken(whole_file=False))
@example(raw=_without_rows())
def test_load_studies_raises_only_cmb_errors(raw: bytes) -> None:
    COUNTS["load_studies"] += 1
    FIGURES.input("hypothesis_load_studies", examples=COUNTS["load_studies"])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.dcm"
        path.write_bytes(raw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.suppress(CmbError):
                load_studies([path])


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Spool:
    d = tmp_path_factory.mktemp("ingest")
    return Spool(d / "spool", Database(f"sqlite:///{d / 'db.sqlite'}"), 0)


@SETTINGS
@given(raw=broken(whole_file=True))
@example(raw=BASE[:141])  # the file meta group length cut after one byte
def test_service_ingest_raises_only_not_storable(spool: Spool, raw: bytes) -> None:
    COUNTS["ingest"] += 1
    FIGURES.input("hypothesis_ingest", examples=COUNTS["ingest"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.suppress(NotStorableError):
            ids = parse_part10(raw)
            spool.store(raw, ids, "rest:hypothesis")
