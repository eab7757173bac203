"""model.dicom_in: a missing or mistyped header attribute is an InputError naming the file.

Never an AttributeError/ValueError from deep inside (a fuzzed or badly
exported header); the reason is what a failed job shows.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from model.dicom_in import load_studies
from model.errors import InputError
from model.series_writer import write_series
from tests.helpers.dicom_studies import make_volume


@pytest.fixture
def series(tmp_path: Path) -> list[Path]:
    return write_series(make_volume(shape=(3, 16, 16)), tmp_path / "dicom")


def _edit(path: Path, change: Callable[[Dataset], None]) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


@pytest.mark.parametrize("keyword", ["Rows", "Columns", "BitsAllocated"])
def test_image_without_a_required_attribute(series: list[Path], keyword: str) -> None:
    _edit(series[1], lambda ds: delattr(ds, keyword))
    with pytest.raises(InputError, match=rf"{series[1].name}.*image without {keyword}"):
        load_studies(series)


def test_image_without_sop_instance_uid(series: list[Path]) -> None:
    _edit(series[0], lambda ds: delattr(ds, "SOPInstanceUID"))
    with pytest.raises(InputError, match=rf"{series[0].name}.*missing or unreadable header"):
        load_studies(series)


def test_rows_retagged_in_the_raw_bytes(series: list[Path]) -> None:
    """The hypothesis example of tests/reliability: (0028,0010) re-tagged (0029,0010)."""
    raw = bytearray(series[2].read_bytes())
    at = raw.index(struct.pack("<HH", 0x0028, 0x0010))
    struct.pack_into("<H", raw, at, 0x0029)
    series[2].write_bytes(bytes(raw))
    with pytest.raises(InputError, match=rf"{series[2].name}.*image without Rows"):
        load_studies(series)


def test_mistyped_series_attribute(series: list[Path]) -> None:
    """A text where a number belongs (read by the series summary, after the frames)."""

    def garble(ds: Dataset) -> None:
        ds["MagneticFieldStrength"] = pydicom.DataElement(0x00180087, "LO", "three tesla")

    for path in series:
        _edit(path, garble)
    with pytest.raises(InputError, match=r"missing or unreadable header attribute"):
        load_studies(series)
