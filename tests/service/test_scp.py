"""The Storage SCP against real SCUs: pynetdicom and dcmtk storescu."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from service.db.models import Instance, Series, Study
from service.db.session import Database
from service.scp import StorageSCP
from service.scu import associate
from service.settings import Settings
from service.store import Spool
from tests.helpers.dcmtk import storescu
from tests.service.dicom_factory import CT_IMAGE_STORAGE, mr_dataset, write_study

pytestmark = pytest.mark.network


@pytest.fixture
def scp(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[tuple[StorageSCP, Settings, Database, Spool]]:
    settings = make_settings(allow_ae=["PACS", "STORESCU"])
    db = Database(settings.db_url if settings.database_url else f"sqlite:///{tmp_path / 'scp.db'}")
    spool = Spool(tmp_path / "spool", db, 0)
    listener = StorageSCP(settings, spool)
    listener.start()
    yield listener, settings, db, spool
    listener.stop()
    db.dispose()


def _assoc(settings: Settings, calling: str = "PACS", contexts: tuple[str, ...] = ()) -> Any:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    for uid in contexts or (MRImageStorage,):
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    return associate(ae, "127.0.0.1", settings.dicom_port, ae_title=settings.ae_title)


def test_echo_and_store_are_durable_and_recorded(scp: tuple) -> None:
    _listener, settings, db, _spool = scp
    assoc = _assoc(settings)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    study, series = generate_uid(), generate_uid()
    datasets = [mr_dataset(study, series, i) for i in range(3)]
    for ds in datasets:
        assert assoc.send_c_store(ds).Status == 0x0000
    # The same instance again: success, nothing new.
    assert assoc.send_c_store(datasets[0]).Status == 0x0000
    assoc.release()
    with db.session() as s:
        rows = s.scalars(select(Instance).where(Instance.study_instance_uid == study)).all()
        assert len(rows) == 3
        assert {r.source for r in rows} == {"dimse:PACS"}
        assert s.get(Series, series).n_instances == 3
        assert s.get(Study, study).dirty
    for ds, row in zip(
        datasets, sorted(rows, key=lambda r: int(dcmread(r.path).InstanceNumber)), strict=True
    ):
        stored = dcmread(row.path)
        assert stored.SOPInstanceUID == ds.SOPInstanceUID
        assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert stored.PixelData == ds.PixelData


def test_unknown_calling_ae_is_rejected(scp: tuple) -> None:
    _listener, settings, _db, _spool = scp
    assoc = _assoc(settings, calling="INTRUDER")
    assert assoc.is_rejected


def test_unsupported_sop_class_is_not_negotiated(scp: tuple) -> None:
    _listener, settings, _db, _spool = scp
    assoc = _assoc(settings, contexts=(CT_IMAGE_STORAGE,))
    assert assoc.is_established  # Verification is accepted
    accepted = {c.abstract_syntax for c in assoc.accepted_contexts}
    assert CT_IMAGE_STORAGE not in accepted
    rejected = {c.abstract_syntax for c in assoc.rejected_contexts}
    assert CT_IMAGE_STORAGE in rejected
    assoc.release()


def test_disk_below_reserve_answers_out_of_resources(scp: tuple) -> None:
    _listener, settings, db, spool = scp
    spool.reserve_bytes = shutil.disk_usage(spool.root).total * 2
    assoc = _assoc(settings)
    status = assoc.send_c_store(mr_dataset(generate_uid(), generate_uid(), 0))
    assert status.Status == 0xA700
    assoc.release()
    with db.session() as s:
        assert s.scalars(select(Instance)).all() == []


def test_handler_fault_is_a_status_and_the_association_lives(
    scp: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    _listener, settings, _db, spool = scp
    original = spool.store
    calls = {"n": 0}

    def flaky(*args: object, **kw: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("simulated disk fault")
        return original(*args, **kw)

    monkeypatch.setattr(spool, "store", flaky)
    assoc = _assoc(settings)
    study, series = generate_uid(), generate_uid()
    assert assoc.send_c_store(mr_dataset(study, series, 0)).Status == 0xC211
    assert assoc.is_established
    assert assoc.send_c_store(mr_dataset(study, series, 1)).Status == 0x0000
    assoc.release()


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk storescu not installed")
def test_dcmtk_storescu_sends_a_study(scp: tuple, tmp_path: Path) -> None:
    _listener, settings, db, _spool = scp
    study, files = write_study(tmp_path / "study", n=4, descriptions=("SWI", "PHASE"))
    run = storescu(
        tmp_path / "study", settings.dicom_port, calling="STORESCU", called=settings.ae_title
    )
    assert run.returncode == 0, run.stderr
    with db.session() as s:
        n = len(s.scalars(select(Instance).where(Instance.study_instance_uid == study)).all())
    assert n == len(files) == 8


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk storescu not installed")
def test_dcmtk_storescu_unknown_ae_fails(scp: tuple, tmp_path: Path) -> None:
    _listener, settings, _db, _spool = scp
    write_study(tmp_path / "study", n=1)
    run = storescu(
        tmp_path / "study", settings.dicom_port, calling="NOBODY", called=settings.ae_title
    )
    assert run.returncode != 0
    assert "Calling AE Title Not Recognized" in run.stdout + run.stderr


@pytest.mark.skipif(shutil.which("dcmcrle") is None, reason="dcmtk dcmcrle not installed")
def test_compressed_instance_is_stored_as_received(scp: tuple, tmp_path: Path) -> None:
    _listener, settings, db, _spool = scp
    _study, files = write_study(tmp_path / "raw", n=1)
    rle = tmp_path / "rle" / "a.dcm"
    rle.parent.mkdir()
    subprocess.run(["dcmcrle", str(files[0]), str(rle)], check=True, timeout=60)
    run = storescu(rle, settings.dicom_port, called=settings.ae_title, options=("-xr",))
    assert run.returncode == 0, run.stdout + run.stderr
    sent = dcmread(rle)
    with db.session() as s:
        row = s.get(Instance, sent.SOPInstanceUID)
    assert row is not None
    assert row.transfer_syntax_uid == "1.2.840.10008.1.2.5"
    stored = dcmread(row.path)
    assert stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    assert stored.PixelData == sent.PixelData  # the encapsulated RLE bytes, untouched


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_tls_listener(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    settings = make_settings(tls_cert=cert, tls_key=key)
    db = Database(f"sqlite:///{tmp_path / 'tls.db'}")
    listener = StorageSCP(settings, Spool(tmp_path / "spool", db, 0))
    listener.start()
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        ctx.check_hostname = False
        ae = AE(ae_title="PACS")
        ae.add_requested_context(Verification)
        assoc = associate(
            ae,
            "127.0.0.1",
            settings.dicom_port,
            ae_title=settings.ae_title,
            tls_args=(ctx, "localhost"),
        )
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        plain = associate(ae, "127.0.0.1", settings.dicom_port, ae_title=settings.ae_title)
        assert not plain.is_established
    finally:
        listener.stop()
        db.dispose()


def test_peer_address_allow_list(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'hosts.db'}")
    for allowed, expected in ((["10.255.255.1"], False), (["127.0.0.1"], True)):
        settings = make_settings(allow_hosts=allowed)
        listener = StorageSCP(settings, Spool(tmp_path / "spool", db, 0))
        listener.start()
        try:
            assoc = _assoc(settings)
            assert assoc.is_established is expected
            if expected:
                assoc.release()
        finally:
            listener.stop()
    db.dispose()
