"""DICOM TLS for the outbox: results reach a TLS-only receiver that requires a client certificate.

The test makes its own PKI with the openssl CLI (a CA, a server certificate
for 127.0.0.1, a client certificate, and a second CA that signed neither) and
runs a pynetdicom Storage SCP with an SSL context as the destination.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, StoragePresentationContexts, evt
from sqlalchemy import select

from service.db.models import Delivery, DeliveryState, Job, JobState
from service.db.session import Database
from service.export import Exporter
from service.settings import Settings, SettingsError, load_settings
from tests.service.conftest import add_succeeded_job, free_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def _leaf(folder: Path, name: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    cert, key, csr = folder / f"{name}.pem", folder / f"{name}.key", folder / f"{name}.csr"
    extfile = folder / f"{name}.ext"
    extfile.write_text(ext + "\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-days", "1", "-out", str(cert), "-extfile", str(extfile),
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = _ca(folder, "hospital-ca")
    server = _leaf(
        folder,
        "pacs",
        ca,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
    )
    client = _leaf(folder, "cmb", ca, "extendedKeyUsage=clientAuth")
    other, _ = _ca(folder, "other-ca")
    return Pki(ca[0], server[0], server[1], client[0], client[1], other)


class TlsReceiver:
    """A Storage SCP that speaks only TLS and requires a client certificate from ``ca``."""

    def __init__(self, pki: Pki) -> None:
        self.port = free_port()
        self.received: list[str] = []
        self.client_subjects: list[Any] = []
        self._lock = threading.Lock()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        ae = AE(ae_title="PACS")
        ae.supported_contexts = StoragePresentationContexts
        server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            ssl_context=ctx,
            evt_handlers=[(evt.EVT_C_STORE, self._store)],
        )
        if server is None:
            raise RuntimeError("pynetdicom returned no server for block=False")
        self.server = server

    def _store(self, event: evt.Event) -> int:
        with self._lock:
            self.received.append(str(event.dataset.SOPInstanceUID))
            peer = event.assoc.dul.socket.socket  # type: ignore[union-attr]
            if not isinstance(peer, ssl.SSLSocket):
                raise TypeError("a plain association reached the TLS-only receiver")
            cert = peer.getpeercert()
            self.client_subjects.append(cert["subject"] if cert else None)
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver(pki: Pki) -> Iterator[TlsReceiver]:
    r = TlsReceiver(pki)
    yield r
    r.stop()


def _outbox(tmp_path: Path, settings: Settings) -> tuple[Database, str, str]:
    """A database with one succeeded job whose SR output waits in the outbox."""
    db = Database(f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}")
    return (db, *add_succeeded_job(db, tmp_path))


def _settings(tmp_path: Path, port: int, **kw: Any) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        destinations=[f"PACS@127.0.0.1:{port}"],
        dimse_timeout_s=10,
        export_backoff_s=0.2,
        export_max_backoff_s=1.0,
        log_format="text",
        **kw,
    )


def _delivery(db: Database, job_id: str) -> Delivery:
    with db.session() as s:
        row = s.scalars(select(Delivery).where(Delivery.job_id == job_id)).one()
        s.expunge(row)
        return row


def test_results_go_over_mutual_tls(pki: Pki, receiver: TlsReceiver, tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        receiver.port,
        export_tls=True,
        export_tls_ca=pki.ca,
        export_tls_cert=pki.client_cert,
        export_tls_key=pki.client_key,
    )
    db, job_id, sop_uid = _outbox(tmp_path, settings)
    try:
        assert Exporter(settings, db).run_once() == 1
        assert receiver.received == [sop_uid]
        # The receiver saw our client certificate.
        assert receiver.client_subjects[0][-1:] == ((("commonName", "cmb"),),)
        row = _delivery(db, job_id)
        assert row.state == DeliveryState.SENT and row.attempts == 1
        with db.session() as s:
            job = s.get(Job, job_id)
            assert job is not None and job.state == JobState.DELIVERED
    finally:
        db.dispose()


@pytest.mark.parametrize(
    "case",
    ["plain", "untrusted-server", "no-client-cert"],
)
def test_failed_tls_handshake_keeps_the_result_pending(
    case: str, pki: Pki, receiver: TlsReceiver, tmp_path: Path
) -> None:
    kw: dict[str, Any] = {
        "plain": {},
        # The PACS's certificate is not signed by the CA we trust: we refuse to send.
        "untrusted-server": {
            "export_tls": True,
            "export_tls_ca": pki.other_ca,
            "export_tls_cert": pki.client_cert,
            "export_tls_key": pki.client_key,
        },
        # We trust the PACS but present no certificate: the PACS refuses us.
        "no-client-cert": {"export_tls": True, "export_tls_ca": pki.ca},
    }[case]
    settings = _settings(tmp_path, receiver.port, **kw)
    db, job_id, _ = _outbox(tmp_path, settings)
    try:
        assert Exporter(settings, db).run_once() == 0
        assert receiver.received == []
        row = _delivery(db, job_id)
        assert row.state == DeliveryState.PENDING and row.attempts == 1
        assert row.last_error
        if case != "plain":
            assert "TLS" in row.last_error
    finally:
        db.dispose()


def test_verify_off_accepts_an_unknown_server_certificate(
    pki: Pki, receiver: TlsReceiver, tmp_path: Path
) -> None:
    settings = _settings(
        tmp_path,
        receiver.port,
        export_tls=True,
        export_tls_verify=False,
        export_tls_cert=pki.client_cert,
        export_tls_key=pki.client_key,
    )
    db, _job_id, sop_uid = _outbox(tmp_path, settings)
    try:
        assert Exporter(settings, db).run_once() == 1
        assert receiver.received == [sop_uid]
    finally:
        db.dispose()


def test_export_tls_settings_are_validated(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="set CMB_EXPORT_TLS=true"):
        load_settings(data_dir=tmp_path, export_tls_ca=pki.ca)
    with pytest.raises(SettingsError, match="export_tls_cert and export_tls_key"):
        load_settings(data_dir=tmp_path, export_tls=True, export_tls_cert=pki.client_cert)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(data_dir=tmp_path, export_tls=True, export_tls_ca=tmp_path / "nope.pem")
    # A key that does not match the certificate stops the exporter at start-up.
    bad = load_settings(
        data_dir=tmp_path,
        export_tls=True,
        export_tls_cert=pki.client_cert,
        export_tls_key=pki.server_key,
    )
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(ssl.SSLError):
            Exporter(bad, db)
    finally:
        db.dispose()
