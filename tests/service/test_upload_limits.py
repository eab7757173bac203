"""Upload limits: bytes received (chunked or not), zip bombs, and garbled DICOM bytes."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from service.api.app import create_app
from service.api.upload import ZipLimits, iter_files
from service.db.session import Database
from service.settings import Settings
from service.store import NotStorableError, Spool, parse_part10
from tests.service.conftest import KEY
from tests.service.dicom_factory import mr_dataset, write_study

H = {"X-API-Key": KEY}


@pytest.fixture
def api(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(
        max_upload_mb=1.0, zip_max_total_mb=4.0, zip_max_members=5, zip_max_ratio=50
    )
    db = Database(settings.db_url)
    spool = Spool(settings.spool_dir, db, 0)
    with TestClient(create_app(settings, db, spool)) as client:
        yield client
    db.dispose()


def _chunked_form(payload: bytes, boundary: str = "b0undary") -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.dcm"\r\n'
        "Content-Type: application/dicom\r\n\r\n"
    ).encode()
    for i in range(0, len(payload), 2**16):
        yield payload[i : i + 2**16]
    yield f"\r\n--{boundary}--\r\n".encode()


def test_chunked_upload_over_the_limit_is_413(api: TestClient) -> None:
    r = api.post(
        "/studies",
        headers={**H, "Content-Type": "multipart/form-data; boundary=b0undary"},
        content=_chunked_form(b"\0" * (2 * 2**20)),  # a generator: no Content-Length
    )
    assert r.status_code == 413
    assert "larger than 1 MB" in r.json()["detail"]


def test_chunked_stow_over_the_limit_is_413(api: TestClient) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(40):
            yield b"\0" * 2**16

    r = api.post(
        "/dicomweb/studies",
        headers={**H, "Content-Type": 'multipart/related; type="application/dicom"; boundary=x'},
        content=body(),
    )
    assert r.status_code == 413


def test_chunked_upload_under_the_limit_is_stored(api: TestClient, tmp_path: Path) -> None:
    _, files = write_study(tmp_path / "study", n=1)
    r = api.post(
        "/studies",
        headers={**H, "Content-Type": "multipart/form-data; boundary=b0undary"},
        content=_chunked_form(files[0].read_bytes()),
    )
    assert r.status_code == 202, r.text
    assert r.json()["stored"] == 1


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_bomb_is_refused_with_the_reason(api: TestClient) -> None:
    bomb = _zip({"bomb.dcm": b"\0" * (16 * 2**20)})  # ~16 KB inflating 1000-fold
    r = api.post("/studies", headers=H, files=[("files", ("bomb.zip", bomb, "application/zip"))])
    assert r.status_code == 400
    [refused] = r.json()["refused"]
    assert refused["file"] == "bomb.zip"
    assert "inflates more than 50-fold" in refused["reason"]


def test_zip_with_too_many_members_is_refused(api: TestClient) -> None:
    archive = _zip({f"f{i}.txt": b"x" for i in range(6)})
    r = api.post("/studies", headers=H, files=[("files", ("many.zip", archive, "x/y"))])
    assert r.status_code == 400
    assert "6 files, more than the limit of 5" in r.json()["refused"][0]["reason"]


def test_members_before_the_limit_stay_stored(tmp_path: Path) -> None:
    _, files = write_study(tmp_path / "study", n=2)
    members = {p.name: p.read_bytes() for p in files}
    size = sum(len(v) for v in members.values())
    limits = ZipLimits(max_total_bytes=size - 1, max_members=10, max_ratio=1000)
    out: list[str] = []

    def extract() -> None:
        out.extend(name for name, _ in iter_files("a.zip", _zip(members), limits))

    with pytest.raises(NotStorableError, match=r"^a\.zip: zip archive inflates to more than"):
        extract()
    assert len(out) == 1  # the first member was complete and yielded


def test_corrupt_zip_is_not_storable() -> None:
    raw = _zip({"a.dcm": b"x" * 1000})
    with pytest.raises(NotStorableError, match="corrupt zip archive"):
        list(iter_files("c.zip", raw[:60] + b"\xff" * 40 + raw[100:]))


def _part10() -> bytes:
    ds = mr_dataset(generate_uid(), generate_uid(), 0)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_truncated_files_raise_only_not_storable() -> None:
    """Cut anywhere after the preamble: stored ids or NotStorableError, never struct.error."""
    raw = _part10()
    refused = 0
    for cut in range(128, len(raw)):
        try:
            parse_part10(raw[:cut])
        except NotStorableError:
            refused += 1
    assert refused > 0


def test_odd_length_meta_group_length_is_not_storable() -> None:
    raw = bytearray(_part10())
    # (0002,0000) UL with a declared length of 1: pydicom raises BytesLengthException.
    at = raw.index(b"\x02\x00\x00\x00UL")
    raw[at + 6 : at + 8] = b"\x01\x00"
    with pytest.raises(NotStorableError, match=r"\(truncated or corrupt\): BytesLengthException"):
        parse_part10(bytes(raw[: at + 9]))
